"""Parsing of a grounding LVLM's reply into an answer and ROIs in the original frame's pixels.

Qwen2.5-VL answers grounding prompts with JSON such as
``[{"bbox_2d": [x1, y1, x2, y2], "label": "car"}, ...]``, often inside a fenced json
block and with prose around it, sometimes truncated or otherwise malformed. Boxes are in
the pixels of the image the model received (Qwen2-VL used 0-1000 relative coordinates).
This parser recovers what is valid, reports what is not, and never raises.
"""

from __future__ import annotations

import ast
import enum
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from spotvlm_ros.core.types import Box, Roi

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d")
_LABEL_KEYS = ("label", "category", "name", "class")
_LIST_KEYS = ("objects", "rois", "detections", "boxes", "regions")
_ANSWER_KEYS = ("answer", "response", "text")


class Coordinates(enum.Enum):
    """How the model's box coordinates are expressed."""

    ABSOLUTE = "absolute"  # pixels of the image the model received (Qwen2.5-VL)
    RELATIVE_1000 = "relative_1000"  # 0..1000 of the image's width/height (Qwen2-VL)


@dataclass(frozen=True)
class ParsedReply:
    """An LVLM reply split into its answer text, its valid ROIs and the problems met."""

    answer: str
    rois: tuple[Roi, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing in the reply had to be skipped or repaired."""
        return not self.problems


DROP_REASONS = (
    ("no bbox_2d", "no_box"),
    ("is not 4 numbers", "not_4_numbers"),
    ("has non-numbers", "non_numbers"),
    ("is not finite", "not_finite"),
    ("no label", "no_label"),
    ("is empty or outside the image", "outside_image"),
)
"""What a problem message says of a dropped box, and the short reason it is counted under."""


def dropped_box_reasons(problems: tuple[str, ...] | list[str]) -> dict[str, int]:
    """How many boxes ``problems`` (from :func:`parse_reply`) say were dropped, by reason."""
    counts: dict[str, int] = {}
    for problem in problems:
        for text, reason in DROP_REASONS:
            if text in problem:
                counts[reason] = counts.get(reason, 0) + 1
                break
    return counts


def parse_reply(
    text: str,
    *,
    model_size: tuple[int, int],
    frame_size: tuple[int, int],
    coordinates: Coordinates = Coordinates.ABSOLUTE,
    min_box_size: float = 1.0,
) -> ParsedReply:
    """Parse ``text`` into answer and ROIs.

    Args:
        text: the model's reply.
        model_size: (width, height) of the image the model received.
        frame_size: (width, height) of the original frame the ROIs are returned in.
        coordinates: how the reply's box coordinates are expressed.
        min_box_size: boxes narrower or lower than this (original pixels) after clipping
            are dropped.
    """
    problems: list[str] = []
    try:
        if not isinstance(text, str):  # callers may pass a decoded JSON value
            kind = type(text).__name__  # type: ignore[unreachable]
            return ParsedReply("", (), (f"reply is {kind}, not text",))
        objects, prose, answer_from_json = _extract_objects(text, problems)
        rois = []
        for index, obj in enumerate(objects):
            roi = _to_roi(obj, index, model_size, frame_size, coordinates, min_box_size, problems)
            if roi is not None:
                rois.append(roi)
        answer = answer_from_json if answer_from_json is not None else prose
        return ParsedReply(answer.strip(), tuple(rois), tuple(problems))
    except Exception as exc:
        problems.append(f"unexpected parser failure: {type(exc).__name__}: {exc}")
        return ParsedReply(text.strip() if isinstance(text, str) else "", (), tuple(problems))


def _extract_objects(text: str, problems: list[str]) -> tuple[list[Any], str, str | None]:
    """Find the JSON in ``text``: (objects, the prose around it, an "answer" field if any)."""
    fenced = [(m.start(), m.end(), m.group(1)) for m in _FENCE.finditer(text)]
    spans = fenced or list(_bracketed_spans(text))
    objects: list[Any] = []
    answer: str | None = None
    prose_parts: list[str] = []
    last = 0
    used_any = False
    for start, end, body in spans:
        values = _load_json(body, problems)
        if values is None:
            continue
        used_any = True
        prose_parts.append(text[last:start])
        last = end
        for value in values:
            found, found_answer = _objects_in(value)
            objects.extend(found)
            if found_answer is not None and answer is None:
                answer = found_answer
    prose_parts.append(text[last:])
    prose = " ".join(" ".join(p.split()) for p in prose_parts if p.strip())
    if not used_any and ("bbox" in text or ("[" in text and "]" in text and "{" in text)):
        problems.append("reply looks like it holds boxes but no JSON could be read")
    return objects, prose, answer


def _bracketed_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """Top-level ``[...]`` or ``{...}`` spans (the last one runs to the end if unclosed)."""
    depth, start, in_string, escape = 0, -1, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"' and depth > 0:
            in_string = True
        elif ch in "[{":
            if depth == 0:
                start = i
            depth += 1
        elif ch in "]}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, i + 1, text[start : i + 1]
    if depth > 0 and start >= 0:
        yield start, len(text), text[start:]


def _load_json(body: str, problems: list[str]) -> list[Any] | None:
    """The value(s) in ``body``: whole JSON, Python-literal JSON, or the complete objects of
    a truncated or broken array. None when nothing can be read."""
    body = body.strip()
    if not body:
        return None
    for loader in (json.loads, _loads_lenient, ast.literal_eval):
        try:
            return [loader(body)]
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    # Salvage every complete {...} object inside a damaged array.
    salvaged = []
    for _, _, inner in _bracketed_spans(body[1:] if body.startswith("[") else body):
        if not inner.startswith("{") or not inner.endswith("}"):
            continue
        for loader in (json.loads, _loads_lenient, ast.literal_eval):
            try:
                salvaged.append(loader(inner))
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    if salvaged:
        problems.append(
            f"malformed or truncated JSON: recovered {len(salvaged)} complete object(s)"
        )
        return salvaged
    if "bbox" in body or body.startswith(("[{", "{")):
        problems.append(f"unreadable JSON: {body[:60]!r}")
    return None


def _loads_lenient(body: str) -> Any:
    """JSON with trailing commas removed (a frequent model mistake)."""
    return json.loads(re.sub(r",\s*([\]}])", r"\1", body))


def _objects_in(value: Any) -> tuple[list[Any], str | None]:
    """The box objects in a decoded JSON value, and an "answer" string if it carries one."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)] + [
            item for v in value if isinstance(v, list) for item in _objects_in(v)[0]
        ], None
    if isinstance(value, dict):
        answer = next((value[k] for k in _ANSWER_KEYS if isinstance(value.get(k), str)), None)
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return [v for v in value[key] if isinstance(v, dict)], answer
        if any(k in value for k in _BOX_KEYS):
            return [value], answer
        return [], answer
    return [], None


def _to_roi(
    obj: dict[str, Any],
    index: int,
    model_size: tuple[int, int],
    frame_size: tuple[int, int],
    coordinates: Coordinates,
    min_box_size: float,
    problems: list[str],
) -> Roi | None:
    where = f"object {index}"
    raw_box = next((obj[k] for k in _BOX_KEYS if k in obj), None)
    label = next((obj[k] for k in _LABEL_KEYS if isinstance(obj.get(k), str)), None)
    if raw_box is None:
        problems.append(f"{where}: no bbox_2d")
        return None
    if not isinstance(raw_box, (list, tuple)) or len(raw_box) != 4:
        problems.append(f"{where}: bbox_2d is not 4 numbers: {raw_box!r:.60}")
        return None
    try:
        coords = [float(v) for v in raw_box]
    except (TypeError, ValueError):
        problems.append(f"{where}: bbox_2d has non-numbers: {raw_box!r:.60}")
        return None
    if not all(math.isfinite(v) for v in coords):
        problems.append(f"{where}: bbox_2d is not finite: {raw_box!r:.60}")
        return None
    if not label or not label.strip():
        problems.append(f"{where}: no label")
        return None
    frame_w, frame_h = frame_size
    if coordinates is Coordinates.RELATIVE_1000:
        sx, sy = frame_w / 1000.0, frame_h / 1000.0
    else:
        model_w, model_h = model_size
        sx, sy = frame_w / model_w, frame_h / model_h
    box = Box.from_corners(*coords).scaled(sx, sy)
    clipped = box.clipped(frame_w, frame_h)
    if clipped.is_degenerate(min_box_size):
        problems.append(f"{where} ({label}): box {coords} is empty or outside the image")
        return None
    if clipped != box:
        problems.append(f"{where} ({label}): box clipped to the image")
    score = obj.get("score", obj.get("confidence", 1.0))
    score = float(score) if isinstance(score, (int, float)) and 0.0 <= score <= 1.0 else 1.0
    return Roi(label=label.strip(), box=clipped, score=score)
