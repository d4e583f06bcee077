"""The Qwen2.5-VL chat format, built in one place.

The prompt is built as text so that the number of ``<|image_pad|>`` tokens can be set to
the image's visual-token count (``prod(image_grid_thw) / merge**2``) without a processor
class that needs torchvision. ``CHAT_TEMPLATE`` is the same format as a Jinja template,
written into the test model's tokenizer so that ``apply_chat_template`` agrees with it.
"""

from __future__ import annotations

from collections.abc import Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}"
    "{{- part['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def build_prompt(
    question: str,
    *,
    image_tokens: int,
    context_text: str = "",
    history: Sequence[dict[str, str]] = (),
    system: str = DEFAULT_SYSTEM,
) -> str:
    """The full prompt for one frame: system turn, previous turns, then the image and the
    (context, question) user turn, ending where the assistant's answer starts."""
    if image_tokens < 1:
        raise ValueError(f"image_tokens must be >= 1, got {image_tokens}")
    parts = [f"{IM_START}system\n{system}{IM_END}\n"]
    for turn in history:
        parts.append(f"{IM_START}{turn['role']}\n{turn['content']}{IM_END}\n")
    text = f"{context_text}\n{question}" if context_text else question
    image = VISION_START + IMAGE_PAD * image_tokens + VISION_END
    parts.append(f"{IM_START}user\n{image}{text}{IM_END}\n{IM_START}assistant\n")
    return "".join(parts)
