"""Conversions between spotvlm_msgs / sensor_msgs and the core's types, in one place."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from spotvlm_msgs.msg import HistoryEntry as HistoryEntryMsg
from spotvlm_msgs.msg import Roi as RoiMsg
from spotvlm_ros.core.context import HistoryEntry
from spotvlm_ros.core.types import NS_PER_S, Box, Roi, Source, Stamp
from spotvlm_ros.imaging import decode_compressed, raw_to_rgb, swap_red_blue

if TYPE_CHECKING:
    from vision_msgs.msg import Detection2DArray


def stamp_of(time: Time) -> Stamp:
    """A core stamp (ns) from a ROS time."""
    return int(time.sec) * NS_PER_S + int(time.nanosec)


def to_time(stamp: Stamp) -> Time:
    """A ROS time from a core stamp (ns)."""
    sec, nanosec = divmod(int(stamp), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def roi_to_msg(roi: Roi) -> RoiMsg:
    """A Roi message; the box is rounded outwards to whole pixels."""
    x1, y1 = int(np.floor(roi.box.x1)), int(np.floor(roi.box.y1))
    x2, y2 = int(np.ceil(roi.box.x2)), int(np.ceil(roi.box.y2))
    msg = RoiMsg(label=roi.label, score=float(roi.score))
    msg.box = RegionOfInterest(
        x_offset=max(0, x1), y_offset=max(0, y1), width=max(0, x2 - x1), height=max(0, y2 - y1)
    )
    msg.track_id = RoiMsg.TRACK_ID_NONE if roi.track_id is None else int(roi.track_id)
    return msg


def roi_from_msg(msg: RoiMsg) -> Roi:
    """A core Roi from a message."""
    b = msg.box
    box = Box(
        float(b.x_offset),
        float(b.y_offset),
        float(b.x_offset + b.width),
        float(b.y_offset + b.height),
    )
    track = None if msg.track_id == RoiMsg.TRACK_ID_NONE else int(msg.track_id)
    return Roi(msg.label, box, float(msg.score), track)


def rois_to_msgs(rois: Iterable[Roi]) -> list[RoiMsg]:
    """Messages for several ROIs."""
    return [roi_to_msg(r) for r in rois]


MAX_ROIS_IN = 100
"""ROIs a node takes from one received message (the highest-scoring): the LVLM's ROIs are
bounded by cloud_bridge's max_rois already, but a message from another publisher is not
trusted to be."""

MAX_HISTORY_IN = 64
"""History entries a node takes from one received message."""

MAX_LABELS_IN = 256
"""Labels a node takes from one received message."""

MAX_TEXT_IN = 4096
"""Characters of an answer or question a node takes from one received message."""


def rois_from_msgs(msgs: Sequence[RoiMsg], limit: int = MAX_ROIS_IN) -> list[Roi]:
    """Core ROIs from several messages: at most ``limit``, the highest-scoring (see
    :func:`cut_count` to say how many were left out)."""
    if len(msgs) > limit:
        best = heapq.nlargest(limit, range(len(msgs)), key=lambda i: float(msgs[i].score))
        msgs = [msgs[i] for i in sorted(best)]
    return [roi_from_msg(m) for m in msgs]


def cut_count(msgs: Sequence[object], limit: int) -> int:
    """How many of ``msgs`` a bound of ``limit`` leaves out."""
    return max(0, len(msgs) - limit)


def bounded_text(text: str, limit: int = MAX_TEXT_IN) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


def entry_to_msg(entry: HistoryEntry) -> HistoryEntryMsg:
    """A HistoryEntry message."""
    return HistoryEntryMsg(
        stamp=to_time(entry.stamp),
        question=entry.question,
        answer=entry.answer,
        source=int(entry.source),
    )


def entry_from_msg(msg: HistoryEntryMsg) -> HistoryEntry:
    """A core HistoryEntry (its texts bounded by MAX_TEXT_IN)."""
    return HistoryEntry(
        stamp_of(msg.stamp),
        bounded_text(msg.question),
        bounded_text(msg.answer),
        Source(msg.source),
    )


def entries_to_msgs(entries: Sequence[HistoryEntry]) -> list[HistoryEntryMsg]:
    """Messages for a history, in order."""
    return [entry_to_msg(e) for e in entries]


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """(H, W, 3) RGB uint8 from an Image message; raises ImageError for bad input."""
    # msg.data is an array.array (the message's setter converts whatever it is given)
    return raw_to_rgb(
        msg.data, int(msg.width), int(msg.height), msg.encoding, int(msg.step), max_pixels
    )


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """(H, W, 3) RGB uint8 from a CompressedImage message; raises ImageError for bad input."""
    return decode_compressed(bytes(msg.data), max_pixels)


def rgb_to_image(rgb: np.ndarray, encoding: str = "bgr8") -> Image:
    """An Image message (bgr8 or rgb8) from an (H, W, 3) RGB uint8 array."""
    pixels = swap_red_blue(rgb) if encoding == "bgr8" else np.ascontiguousarray(rgb)
    height, width = rgb.shape[:2]
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * 3,
        data=pixels.tobytes(),
    )


def detections_to_msg(header: Header, rois: Iterable[Roi]) -> Detection2DArray:
    """vision_msgs/Detection2DArray of ``rois``, every detection stamped with ``header``
    (the source frame's): the label string in ``hypothesis.class_id``, the confidence in
    ``score``, the track id (where there is one) in ``id``."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    array = Detection2DArray(header=header)
    for roi in rois:
        detection = Detection2D(header=header, id="" if roi.track_id is None else str(roi.track_id))
        detection.bbox.center.position.x = (roi.box.x1 + roi.box.x2) / 2.0
        detection.bbox.center.position.y = (roi.box.y1 + roi.box.y2) / 2.0
        detection.bbox.size_x = roi.box.width
        detection.bbox.size_y = roi.box.height
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = roi.label
        hypothesis.hypothesis.score = float(roi.score)
        detection.results = [hypothesis]
        array.detections.append(detection)
    return array


def detection_publisher(node: Node, topic: str, qos_profile: QoSProfile) -> Any:
    """A Detection2DArray publisher, or None (logged once) where vision_msgs is not installed."""
    try:
        from vision_msgs.msg import Detection2DArray
    except ImportError:
        node.get_logger().warning(
            f"vision_msgs is not installed: {topic} (vision_msgs/Detection2DArray) is not "
            "published (scripts/dev setup installs it from the wheelhouse)"
        )
        return None
    return node.create_publisher(Detection2DArray, topic, qos_profile)
