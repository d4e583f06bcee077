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


def test_the_core_source_and_track_values_are_the_messages_constants() -> None:
    """Nodes write core values straight into messages (``int(decision.source)``, a track id
    of None as TRACK_ID_NONE): the two must agree."""
    from spotvlm_msgs.msg import Answer, HistoryEntry, Roi
    from spotvlm_ros.core.types import Box, Source
    from spotvlm_ros.core.types import Roi as CoreRoi
    from spotvlm_ros.ros.convert import roi_from_msg, roi_to_msg

    for source in Source:
        assert getattr(Answer, f"SOURCE_{source.name}") == int(source)
    for source in (Source.SVLM, Source.LVLM):
        assert getattr(HistoryEntry, f"SOURCE_{source.name}") == int(source)
    untracked = CoreRoi("car", Box(1.0, 2.0, 30.0, 40.0), 0.5, None)
    msg = roi_to_msg(untracked)
    assert msg.track_id == Roi.TRACK_ID_NONE
    assert roi_from_msg(msg) == untracked
