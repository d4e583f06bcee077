"""Parsing grounding replies: good ones exactly, bad ones without ever raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.parsing import Coordinates, parse_reply
from spotvlm_ros.core.types import Box

MODEL = (1288, 728)  # what the model saw: 1280x720 resized to multiples of 28
FRAME = (1280, 720)


def parse(text: str, **kw: object) -> object:
    return parse_reply(text, model_size=MODEL, frame_size=FRAME, **kw)  # type: ignore[arg-type]


def test_fenced_qwen_json_with_prose() -> None:
    reply = (
        "I can see two cars and a pedestrian.\n```json\n[\n"
        '  {"bbox_2d": [100, 200, 300, 400], "label": "car"},\n'
        '  {"bbox_2d": [644, 364, 1288, 728], "label": "car"},\n'
        '  {"bbox_2d": [10, 20, 30, 90], "label": "pedestrian"}\n]\n```'
    )
    out = parse_reply(reply, model_size=MODEL, frame_size=FRAME)
    assert out.answer == "I can see two cars and a pedestrian."
    assert [r.label for r in out.rois] == ["car", "car", "pedestrian"]
    sx, sy = 1280 / 1288, 720 / 728
    assert out.rois[0].box == Box(100 * sx, 200 * sy, 300 * sx, 400 * sy)
    assert out.rois[1].box == Box(644 * sx, 364 * sy, 1280.0, 720.0)  # the corner maps exactly
    assert out.ok


def test_bare_json_without_fences() -> None:
    out = parse_reply(
        '[{"bbox_2d": [0, 0, 28, 28], "label": "bus"}]', model_size=(28, 28), frame_size=(56, 56)
    )
    assert out.rois[0].box == Box(0, 0, 56, 56)
    assert out.answer == ""


def test_answer_field_in_a_json_object() -> None:
    out = parse_reply(
        '{"answer": "a truck", "objects": [{"bbox_2d": [1, 2, 50, 60], "label": "truck"}]}',
        model_size=FRAME,
        frame_size=FRAME,
    )
    assert out.answer == "a truck"
    assert out.rois[0].label == "truck"


def test_qwen2_relative_coordinates() -> None:
    out = parse_reply(
        '[{"bbox_2d": [0, 500, 500, 1000], "label": "car"}]',
        model_size=MODEL,
        frame_size=FRAME,
        coordinates=Coordinates.RELATIVE_1000,
    )
    assert out.rois[0].box == Box(0, 360, 640, 720)


def test_out_of_range_box_is_clipped_and_reported() -> None:
    out = parse_reply(
        '[{"bbox_2d": [-50, -10, 2000, 300], "label": "car"}]', model_size=FRAME, frame_size=FRAME
    )
    assert out.rois[0].box == Box(0, 0, 1280, 300)
    assert any("clipped" in p for p in out.problems)


def test_swapped_corners_are_ordered() -> None:
    out = parse_reply(
        '[{"bbox_2d": [300, 400, 100, 200], "label": "car"}]', model_size=FRAME, frame_size=FRAME
    )
    assert out.rois[0].box == Box(100, 200, 300, 400)


def test_plain_prose_reply_has_no_rois_and_no_problem() -> None:
    out = parse_reply("There are three cars.", model_size=FRAME, frame_size=FRAME)
    assert out.answer == "There are three cars."
    assert out.rois == ()
    assert out.ok


# At least 15 realistic bad replies; for each, the ROIs that must survive.
BAD_REPLIES: list[tuple[str, str, int]] = [
    (
        "truncated array",
        '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "car"}, {"bbox_2d": [5,',
        1,
    ),
    ("unclosed fence", '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "car"}]', 1),
    ("trailing comma", '[{"bbox_2d": [1, 2, 30, 40], "label": "car"},]', 1),
    ("python literal quotes", "[{'bbox_2d': [1, 2, 30, 40], 'label': 'car'}]", 1),
    ("three coordinates", '[{"bbox_2d": [1, 2, 30], "label": "car"}]', 0),
    ("string coordinates", '[{"bbox_2d": ["a", "b", "c", "d"], "label": "car"}]', 0),
    ("numeric strings", '[{"bbox_2d": ["1", "2", "30", "40"], "label": "car"}]', 1),
    ("missing label", '[{"bbox_2d": [1, 2, 30, 40]}]', 0),
    ("missing bbox", '[{"label": "car"}]', 0),
    ("empty label", '[{"bbox_2d": [1, 2, 30, 40], "label": "  "}]', 0),
    ("zero-area box", '[{"bbox_2d": [10, 10, 10, 50], "label": "car"}]', 0),
    ("box entirely outside", '[{"bbox_2d": [5000, 5000, 6000, 6000], "label": "car"}]', 0),
    ("nan coordinate", '[{"bbox_2d": [NaN, 2, 30, 40], "label": "car"}]', 0),
    ("infinite coordinate", '[{"bbox_2d": [1, 2, Infinity, 40], "label": "car"}]', 0),
    ("mixed good and bad", '[{"bbox_2d": [1, 2, 30, 40], "label": "car"}, {"bbox_2d": null}]', 1),
    ("garbage in fence", "```json\nnot json at all {{{\n```", 0),
    ("nested list of boxes", '[[{"bbox_2d": [1, 2, 30, 40], "label": "car"}]]', 1),
    ("list not object", "[[1, 2, 30, 40], [5, 6, 70, 80]]", 0),
    ("deep nesting", "[" * 5000 + "]" * 5000, 0),
    ("empty reply", "", 0),
    ("only a fence", "```json\n```", 0),
    ("label is a number", '[{"bbox_2d": [1, 2, 30, 40], "label": 7}]', 0),
    (
        "two fenced blocks",
        '```json\n[{"bbox_2d": [1,2,30,40], "label": "car"}]\n```\nand\n'
        '```json\n[{"bbox_2d": [5,6,70,80], "label": "bus"}]\n```',
        2,
    ),
    ("unicode and control chars", '\x00\ufffd[{"bbox_2d": [1, 2, 30, 40], "label": "cär"}]', 1),
    ("score out of range", '[{"bbox_2d": [1, 2, 30, 40], "label": "car", "score": 7}]', 1),
]


@pytest.mark.parametrize(
    ("case", "reply", "n_rois"), BAD_REPLIES, ids=[c for c, _, _ in BAD_REPLIES]
)
def test_bad_reply_never_raises_and_keeps_what_is_valid(case: str, reply: str, n_rois: int) -> None:
    out = parse_reply(reply, model_size=FRAME, frame_size=FRAME)
    assert len(out.rois) == n_rois, (case, out)
    for roi in out.rois:
        assert 0 <= roi.box.x1 < roi.box.x2 <= FRAME[0]
        assert 0 <= roi.box.y1 < roi.box.y2 <= FRAME[1]
        assert 0.0 <= roi.score <= 1.0


def test_there_are_at_least_15_bad_replies() -> None:
    assert len(BAD_REPLIES) >= 15


def test_problems_are_reported_for_invalid_objects() -> None:
    out = parse_reply(
        '[{"bbox_2d": [1, 2, 30, 40], "label": "car"}, {"label": "bus"}]',
        model_size=FRAME,
        frame_size=FRAME,
    )
    assert len(out.rois) == 1
    assert out.problems == ("object 1: no bbox_2d",)


def test_truncated_reply_says_what_was_recovered() -> None:
    out = parse_reply(BAD_REPLIES[0][1], model_size=FRAME, frame_size=FRAME)
    assert any("recovered 1" in p for p in out.problems)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list('[]{}",:0123456789.-abel_xyzbd2 \n`json')), max_size=120)
)
def test_random_bracket_soup_never_raises(text: str) -> None:
    out = parse_reply(text, model_size=FRAME, frame_size=FRAME)
    for roi in out.rois:
        assert not roi.box.is_degenerate()
