"""The tiny random Qwen2.5-VL test model, built once and kept under build/ between runs."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL_DIR = ROOT / "build" / "test-models" / "tiny-qwen2.5-vl-seed0"


def tiny_model_dir() -> Path:
    """The folder of the tiny test model, built on first use (about 10 s)."""
    from spotvlm_ros.svlm.tiny import TEST_MODEL_MARKER, build_tiny_model, tiny_config_dict

    config = TINY_MODEL_DIR / "config.json"
    expected = tiny_config_dict()["text_config"]["hidden_size"]
    if config.is_file() and (TINY_MODEL_DIR / "model.safetensors").is_file():
        saved = json.loads(config.read_text())
        if saved.get(TEST_MODEL_MARKER) and saved["text_config"]["hidden_size"] == expected:
            return TINY_MODEL_DIR
    return build_tiny_model(TINY_MODEL_DIR, seed=0)


PUBLISHED_MODEL_DIR = ROOT / "build" / "test-models" / "published-layout-qwen2.5-vl-3b-shrunk"


def published_model_dir() -> Path:
    """A folder in the published Qwen2.5-VL-3B-Instruct layout (test/helpers/published.py),
    built on first use (about 10 s)."""
    from test.helpers.published import PUBLISHED_FILES, shrunk_config, write_published_layout

    config = PUBLISHED_MODEL_DIR / "config.json"
    complete = all((PUBLISHED_MODEL_DIR / f).is_file() for f in PUBLISHED_FILES)
    if complete and json.loads(config.read_text()) == shrunk_config():
        return PUBLISHED_MODEL_DIR
    return write_published_layout(PUBLISHED_MODEL_DIR)
