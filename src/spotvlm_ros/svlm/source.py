"""Where the SVLM's weights come from: a local model folder or a hub id (no heavy imports,
so that the launch file can check ``model_path`` before any process starts)."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``org/name``, as on the Hugging Face hub (e.g. Qwen/Qwen2.5-VL-3B-Instruct)."""


def hub_offline() -> bool:
    """Whether the hub must not be contacted (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def model_source_problem(source: str, parameter: str = "model_path") -> str | None:
    """Why ``source`` cannot be an SVLM model, or None if it can.

    A path that exists must be a folder with a config.json. A path that does not exist is
    an error at once when it looks local (absolute, ``./``, ``~``, more than one ``/``, or
    a first component that is a folder here):
    handing it to transformers would only spend half a minute in hub retries on a machine
    without network before failing. ``org/name`` is taken as a hub id unless
    HF_HUB_OFFLINE is set.
    """
    if not source:
        return (
            f"no SVLM model given: set `{parameter}` to a Qwen2.5-VL folder (for a test run, "
            "`spotvlm-make-tiny-model DIR` writes a small random one)"
        )
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{parameter} {source!r} is a file, not a model folder"
        if not (path / "config.json").is_file():
            return f"{parameter} {source!r} has no config.json: not a model folder"
        return None
    # org/name is a hub id, unless "org" is a folder here (build/tiny): then it is a path
    if not HUB_ID.match(source) or Path(source.split("/")[0]).is_dir():
        return f"{parameter} {source!r} does not exist (expected a Qwen2.5-VL model folder)"
    if hub_offline():
        return (
            f"{parameter} {source!r} is not a local folder, and HF_HUB_OFFLINE forbids the "
            "model hub: download the weights and point it at their folder"
        )
    return None
