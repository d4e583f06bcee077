"""A publisher or a subscriber of spotvlm_msgs/LvlmResult, run as its own process.

python -m test.helpers.dds_peer sub TOPIC TIMEOUT  # prints the message, hex-serialised
python -m test.helpers.dds_peer pub TOPIC TIMEOUT  # publishes sample() until the subscriber goes
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import RegionOfInterest

from spotvlm_msgs.msg import LvlmResult, Roi

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sample() -> LvlmResult:
    """The message both peers agree on: a header and an array of ROIs."""
    msg = LvlmResult()
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_000_000
    msg.header.frame_id = "cam_front"
    msg.frame_seq = 42
    msg.receive_time.sec = 1_700_000_126
    msg.latency = 2.875
    msg.question = "Which objects are in the image?"
    msg.answer = "two cars and a pedestrian"
    msg.labels = ["car", "pedestrian"]
    msg.model = "Qwen/Qwen2.5-VL-72B-Instruct"
    msg.status = LvlmResult.STATUS_OK
    for i, (label, box) in enumerate(
        [("car", (10, 20, 300, 150)), ("car", (640, 360, 200, 90)), ("pedestrian", (5, 6, 7, 8))]
    ):
        roi = Roi(label=label, score=0.5 + 0.125 * i, track_id=i if i else Roi.TRACK_ID_NONE)
        roi.box = RegionOfInterest(x_offset=box[0], y_offset=box[1], width=box[2], height=box[3])
        msg.rois.append(roi)
    return msg


def run_subscriber(node: Node, topic: str, timeout: float) -> int:
    received: list[LvlmResult] = []
    node.create_subscription(LvlmResult, topic, received.append, QOS)
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        print(f"subscriber: nothing on {topic} within {timeout} s", file=sys.stderr)
        return 1
    print(serialize_message(received[0]).hex(), flush=True)
    return 0


def run_publisher(node: Node, topic: str, timeout: float) -> int:
    """Publish sample() until the subscriber has taken it and gone: a reader drops what a
    writer sent before the reader had matched that writer, so one message alone may be lost
    (the writer sees the reader first)."""
    publisher = node.create_publisher(LvlmResult, topic, QOS)
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:  # discovery, not a fixed sleep
        if time.monotonic() > deadline:
            print(f"publisher: no subscriber on {topic} within {timeout} s", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    while publisher.get_subscription_count() > 0:  # the subscriber exits once it has one
        if time.monotonic() > deadline:
            print(f"publisher: the subscriber stayed past {timeout} s", file=sys.stderr)
            return 1
        publisher.publish(sample())
        rclpy.spin_once(node, timeout_sec=0.25)
    return 0


def main() -> int:
    role, topic, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rclpy.init()
    node = Node(f"dds_peer_{role}")
    try:
        return (run_subscriber if role == "sub" else run_publisher)(node, topic, timeout)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
