"""Plain rclpy processes for scripts/bench_graph.py: the bare limit and the field's
scheduling patterns, each its own process (started by bench_graph.py, not by hand).

    python scripts/bench_nodes.py relay IN OUT [--kinds image-image|image-header|header-header]
        republish every message from IN on OUT, untouched (or only an Image's header): no
        graph logic at all.
    python scripts/bench_nodes.py pattern callback|refuse|latest [--hold 1.5]
        answer /camera/image_raw with the tiny random Qwen2.5-VL held to ``--hold`` s per
        frame, scheduled one of three ways; every frame ends as a std_msgs/Header on
        /bench/answer stamped with the frame's stamp (frame_id "answered" or "dropped").

- callback: inference inside the image callback (as ros2_nanollm and ROS2-NanoOWL do): the
  executor is blocked while the model runs, frames wait in the subscription's queue.
- refuse: a queue of one that refuses new frames while busy (as detection_vlm does): the
  callback hands a frame to a worker thread if it is idle, else drops it.
- latest: this package's pattern (core.worker.LatestWorker): the newest frame waits while the
  model is busy and a superseded one is answered as dropped.

Every subscription is the common ``create_subscription(Image, topic, callback, 10)`` (keep
last 10, reliable) so that only the scheduling differs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWER_TOPIC = "/bench/answer"
CAMERA_HOP = "/bare/in"  # the bare chain's camera topic
CAMERA_TOPIC = "/camera/image_raw"
QUESTION = "Which objects are in the image?"


def relay(source: str, target: str, kinds: str) -> None:
    """``kinds``: what comes in and goes out, ``image-image``, ``image-header`` (the image's
    header only, as svlm_node sends a result, not the frame) or ``header-header``."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from spotvlm_ros.ros import qos

    types = {"image": Image, "header": Header}
    inbound, outbound = (types[k] for k in kinds.split("-"))
    rclpy.init()
    node = rclpy.create_node(f"bare_relay_{source.strip('/').replace('/', '_')}")
    publisher = node.create_publisher(outbound, target, qos.RESULTS)
    # the camera's hop is best effort (as camera drivers publish), the others reliable: the
    # graph's QoS, so that only the logic differs
    inbound_qos = qos.CAMERA if source == CAMERA_HOP else qos.RESULTS
    if inbound is outbound:
        node.create_subscription(inbound, source, publisher.publish, inbound_qos)
    else:
        forward = lambda msg: publisher.publish(msg.header)  # noqa: E731
        node.create_subscription(inbound, source, forward, inbound_qos)
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)


def pattern(name: str, hold_s: float) -> None:
    import numpy as np
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from spotvlm_ros.core.worker import LatestWorker
    from spotvlm_ros.svlm.qwen import QwenSvlm, QwenSvlmConfig
    from test.helpers.models import tiny_model_dir

    svlm = QwenSvlm.load(QwenSvlmConfig(model=str(tiny_model_dir()), max_new_tokens=8))
    rclpy.init()
    node = rclpy.create_node("bench_pattern")
    node.declare_parameter("probe", 1)  # what the parameter service is asked for
    answers = node.create_publisher(Header, ANSWER_TOPIC, 10)

    def finish(msg: Image, how: str) -> None:
        answers.publish(Header(stamp=msg.header.stamp, frame_id=how))

    def infer(msg: Image) -> None:
        started = time.monotonic()
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        svlm.infer(rgb, QUESTION)
        time.sleep(max(0.0, hold_s - (time.monotonic() - started)))  # the slow model
        finish(msg, "answered")

    if name == "callback":
        callback = infer
    elif name == "refuse":
        busy = threading.Lock()

        def work(msg: Image) -> None:
            try:
                infer(msg)
            finally:
                busy.release()

        def callback(msg: Image) -> None:
            if not busy.acquire(blocking=False):
                finish(msg, "dropped")
                return
            threading.Thread(target=work, args=(msg,), daemon=True).start()

    elif name == "latest":
        worker: LatestWorker[Image] = LatestWorker(
            "bench_worker",
            infer,
            on_superseded=lambda msg: finish(msg, "dropped"),
            on_error=lambda msg, exc: finish(msg, f"dropped: {exc!r}"),
        )
        callback = worker.offer
    else:
        raise SystemExit(f"unknown pattern {name!r}: callback, refuse or latest")
    node.create_subscription(Image, CAMERA_TOPIC, callback, 10)
    node.get_logger().info(f"pattern {name} ready")
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    relay_args = sub.add_parser("relay")
    relay_args.add_argument("source")
    relay_args.add_argument("target")
    relay_args.add_argument(
        "--kinds", choices=("image-image", "image-header", "header-header"), default="image-image"
    )
    pattern_args = sub.add_parser("pattern")
    pattern_args.add_argument("name", choices=("callback", "refuse", "latest"))
    pattern_args.add_argument("--hold", type=float, default=1.5)
    args = parser.parse_args()
    if args.what == "relay":
        relay(args.source, args.target, args.kinds)
    else:
        pattern(args.name, args.hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
