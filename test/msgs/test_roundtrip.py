"""Every spotvlm_msgs type survives serialisation, with every field set."""

from __future__ import annotations

import pytest

from test.helpers.ros_samples import filled, message_classes

rclpy_serialization = pytest.importorskip("rclpy.serialization")
pytest.importorskip("spotvlm_msgs.msg", reason="spotvlm_msgs not built: run scripts/dev setup")

MESSAGE_TYPES = message_classes("spotvlm_msgs.msg")

EXPECTED = {
    "Answer",
    "ContextUpdate",
    "Frame",
    "GroundTruth",
    "HistoryEntry",
    "LvlmResult",
    "Roi",
    "SvlmResult",
}


def test_the_whole_message_set_is_generated() -> None:
    assert {cls.__name__ for cls in MESSAGE_TYPES} == EXPECTED


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_roundtrip(msg_type: type) -> None:
    original = filled(msg_type())
    assert original != msg_type(), "the sample must differ from the default message"
    data = rclpy_serialization.serialize_message(original)
    restored = rclpy_serialization.deserialize_message(data, msg_type)
    assert restored == original


def test_enumerations_are_message_constants() -> None:
    from spotvlm_msgs.msg import Answer, HistoryEntry, LvlmResult, Roi, SvlmResult

    assert (Answer.SOURCE_NONE, Answer.SOURCE_SVLM, Answer.SOURCE_LVLM) == (0, 1, 2)
    assert (HistoryEntry.SOURCE_SVLM, HistoryEntry.SOURCE_LVLM) == (
        Answer.SOURCE_SVLM,
        Answer.SOURCE_LVLM,
    )
    assert {
        LvlmResult.STATUS_OK,
        LvlmResult.STATUS_TIMEOUT,
        LvlmResult.STATUS_ERROR,
        LvlmResult.STATUS_REJECTED,
    } == {0, 1, 2, 3}
    assert {SvlmResult.STATUS_OK, SvlmResult.STATUS_DROPPED, SvlmResult.STATUS_ERROR} == {0, 1, 2}
    assert Roi.TRACK_ID_NONE == -1
