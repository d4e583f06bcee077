"""bag_player: plays a rosbag2 (mcap or sqlite3) with the `rosbags` library, for installs
without `ros2 bag`.

Messages go out on their recorded topics at their recorded timing (scaled by ``rate``),
from ``start_offset_s`` on, once or in a loop. With ``restamp`` (default) every header
stamp is shifted by the same offset so that the first message is stamped "now": the
graph's deadlines are measured against the node clock, and the ground truth stays matched
to its frames because it is shifted alike. On a full install, `ros2 bag play` does the
same job (use its --clock and use_sim_time instead of restamp).
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image

from spotvlm_ros.ros import qos
from spotvlm_ros.ros.convert import stamp_of, to_time
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import StartupError, run_node

IMAGE_CLASSES = (Image, CompressedImage)


def message_class(msgtype: str) -> Any:
    """The rclpy class of a rosbag2 type name such as ``sensor_msgs/msg/Image``."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagPlayer(Node):
    """Replays a bag into the graph."""

    def __init__(self) -> None:
        super().__init__("bag_player")
        bag = declare(self, "bag_player", "bag_path")
        self.rate = declare(self, "bag_player", "rate")
        self.start_offset = declare(self, "bag_player", "start_offset_s")
        self.loop = declare(self, "bag_player", "loop")
        self.restamp = declare(self, "bag_player", "restamp")
        self.wait_for_subscribers = declare(self, "bag_player", "wait_for_subscribers_s")
        self.exit_when_done = declare(self, "bag_player", "exit_when_done")
        self.linger = declare(self, "bag_player", "linger_s")
        self.ready_topics = declare(self, "bag_player", "ready_topics")
        self.ready_url = declare(self, "bag_player", "ready_url")
        path = Path(bag)
        if not bag or not path.exists():
            raise StartupError(f"bag_player: bag_path {bag!r} does not exist")
        from rosbags.rosbag2 import Reader

        try:
            self.reader = Reader(path)
            self.reader.open()
        except Exception as exc:  # rosbags raises several types for unreadable bags
            raise StartupError(f"bag_player: cannot read the bag {path}: {exc}") from exc
        self._bag_publishers: dict[str, Any] = {}
        self._bag_classes: dict[str, Any] = {}
        for connection in self.reader.connections:
            try:
                cls = message_class(connection.msgtype)
            except (ImportError, AttributeError, ValueError):
                self.get_logger().warning(
                    f"skipping {connection.topic}: type {connection.msgtype} unknown"
                )
                continue
            self._bag_classes[connection.topic] = cls
            self._bag_publishers[connection.topic] = self.create_publisher(
                cls, connection.topic, qos.RESULTS
            )
        self.published = 0
        self.finished = threading.Event()
        self.done: Any = Future()  # run_node spins until the bag has played (exit_when_done)
        self.exit_code = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"playing {path} ({self.reader.message_count} messages, "
            f"{self.reader.duration / 1e9:.1f} s) at {self.rate}x: {sorted(self._bag_publishers)}"
        )

    def _await_subscribers(self) -> None:
        wanted = []
        for entry in self.ready_topics:
            topic, _, count = entry.rpartition(":")
            if topic and count.isdigit():
                wanted.append((topic, int(count)))

        # Only the camera topics must be heard: ground truth without an evaluator (or any
        # other recorded topic nobody listens to) is no reason to hold the replay back.
        cameras = [
            p for t, p in self._bag_publishers.items() if self._bag_classes[t] in IMAGE_CLASSES
        ]

        def ready() -> bool:
            bag = all(p.get_subscription_count() > 0 for p in cameras)
            graph = all(self.count_subscribers(t) >= n for t, n in wanted)
            return bag and graph and url_answers()

        def url_answers() -> bool:
            if not self.ready_url:
                return True
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1.0):
                    return True
            except OSError:
                return False

        deadline = time.monotonic() + self.wait_for_subscribers
        while time.monotonic() < deadline and not self._stop.is_set():
            if ready():
                return
            time.sleep(0.05)
        if not url_answers():
            self.get_logger().warning(f"playing although {self.ready_url} does not answer")
        if wanted and not all(self.count_subscribers(t) >= n for t, n in wanted):
            self.get_logger().warning(f"playing although the graph is not ready: {wanted}")
        missing = [t for t, p in self._bag_publishers.items() if p.get_subscription_count() == 0]
        if any(p.get_subscription_count() == 0 for p in cameras):
            self.get_logger().warning(
                f"playing although nobody subscribes to {missing} after "
                f"{self.wait_for_subscribers:.0f} s: is camera_ingest's camera_topic one of "
                f"the bag's topics {sorted(self._bag_publishers)}?"
            )
        elif missing:
            self.get_logger().info(f"nobody subscribes to {missing} (played all the same)")

    def _play(self) -> None:
        try:
            self._await_subscribers()
            while not self._stop.is_set():
                self._play_once()
                if not self.loop:
                    break
        except Exception as exc:  # an unreadable message: end the run, saying why
            self.get_logger().error(f"cannot play {self.reader.path}: {exc!r}")
            self.exit_code = 1
            self.finished.set()
            self.done.set_result(False)
            return
        self.finished.set()
        self.get_logger().info(f"bag finished: {self.published} messages published")
        if self.exit_when_done and not self._stop.wait(self.linger):
            self.done.set_result(True)

    def _play_once(self) -> None:
        start_bag = self.reader.start_time + int(self.start_offset * 1e9)
        start_wall = time.monotonic()
        shift: int | None = None
        for connection, bag_time, raw in self.reader.messages(start=start_bag):
            if self._stop.is_set():
                return
            publisher = self._bag_publishers.get(connection.topic)
            if publisher is None:
                continue
            due = start_wall + (bag_time - start_bag) / 1e9 / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            msg = deserialize_message(raw, self._bag_classes[connection.topic])
            if self.restamp and hasattr(msg, "header"):
                now = self.get_clock().now().nanoseconds
                if shift is None:
                    shift = now - stamp_of(msg.header.stamp)
                msg.header.stamp = to_time(stamp_of(msg.header.stamp) + shift)
            publisher.publish(msg)
            self.published += 1

    def close(self) -> None:
        """Stop playing and close the bag."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.reader.close()


def main(args: list[str] | None = None) -> int:
    """Run the bag player until shutdown."""
    return run_node(BagPlayer, args)


if __name__ == "__main__":
    sys.exit(main())
