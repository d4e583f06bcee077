"""The Qwen2.5-VL chat format, built in one place.

A model folder's own chat template (``chat_template.json``, ``chat_template.jinja`` or
``tokenizer_config.json``) renders the turns when it has one (:func:`render_with_template`);
``build_prompt`` is the Qwen2.5-VL format for a folder without one. Either way the one
``<|image_pad|>`` the template places is then repeated to the image's visual-token count
(``prod(image_grid_thw) / merge**2``), as Qwen's processor does, without a processor class
that needs torchvision. ``CHAT_TEMPLATE`` is ``build_prompt``'s format as a Jinja template,
written into the test model's folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def chat_messages(
    question: str,
    *,
    context_text: str = "",
    history: Sequence[dict[str, str]] = (),
    system: str = DEFAULT_SYSTEM,
) -> list[dict[str, object]]:
    """The turns of one frame's prompt as chat messages (the image first in the user turn)."""
    text = f"{context_text}\n{question}" if context_text else question
    turns: list[dict[str, object]] = [{"role": "system", "content": system}]
    turns += [{"role": t["role"], "content": t["content"]} for t in history]
    turns.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    return turns


def expand_image(rendered: str, image_tokens: int) -> str:
    """``rendered`` (a template's output with one image) with its ``<|image_pad|>`` repeated
    ``image_tokens`` times; ValueError when the template did not place exactly one."""
    if image_tokens < 1:
        raise ValueError(f"image_tokens must be >= 1, got {image_tokens}")
    found = rendered.count(IMAGE_PAD)
    if found != 1 or rendered.count(VISION_START + IMAGE_PAD + VISION_END) != 1:
        raise ValueError(
            f"the chat template placed {found} {IMAGE_PAD} for one image (expected one, as "
            f"{VISION_START}{IMAGE_PAD}{VISION_END}): it is not a Qwen2.5-VL template"
        )
    return rendered.replace(IMAGE_PAD, IMAGE_PAD * image_tokens)


def render_with_template(
    tokenizer: Any,
    question: str,
    *,
    image_tokens: int,
    context_text: str = "",
    history: Sequence[dict[str, str]] = (),
    system: str = DEFAULT_SYSTEM,
) -> str:
    """One frame's prompt rendered by the tokenizer's own chat template."""
    messages = chat_messages(question, context_text=context_text, history=history, system=system)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return expand_image(str(rendered), image_tokens)
