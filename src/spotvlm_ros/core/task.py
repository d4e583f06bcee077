"""Task defaults shared by the nodes, the offline evaluator and the tools."""

from __future__ import annotations

DEFAULT_QUESTION = "Which objects are in the image? Answer with a short list of object categories."
"""The multi-object recognition question asked about every frame."""

DEFAULT_DEADLINE_S = 1.0
"""The real-time deadline of an answer, from its frame's stamp (s)."""
