"""A probe for several camera graphs at once (fleet.launch.py): feeds each camera and
records each graph's output under its own namespace."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from test.helpers.graph import stamp_of_msg, wait_for


class FleetProbe:
    """Publishes frames on ``/<ns>/image_raw`` style topics and listens to each graph."""

    def __init__(self, namespaces: dict[str, str], camera_topics: dict[str, str]) -> None:
        """``namespaces``: camera -> graph namespace; ``camera_topics``: camera -> topic."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from spotvlm_msgs.msg import Answer, Frame, LvlmResult
        from spotvlm_ros.ros import qos

        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node("fleet_probe")
        self.namespaces = namespaces
        self.cameras = {
            c: self.node.create_publisher(Image, t, qos.CAMERA) for c, t in camera_topics.items()
        }
        self.answers: dict[str, list[Any]] = defaultdict(list)
        self.lvlm: dict[str, list[Any]] = defaultdict(list)
        self.admitted: dict[str, list[int]] = defaultdict(list)
        self.lvlm_arrivals: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self.diagnostics: dict[str, Any] = {}  # hardware_id / status name -> latest status
        sub = self.node.create_subscription
        for camera, ns in namespaces.items():
            sub(Answer, f"{ns}/spotvlm/answer", self.answers[camera].append, qos.ANSWERS)
            sub(LvlmResult, f"{ns}/spotvlm/lvlm_result", self._on_lvlm(camera), qos.RESULTS)
            sub(
                Frame,
                f"{ns}/spotvlm/frame",
                lambda f, c=camera: self.admitted[c].append(stamp_of_msg(f)),
                qos.RESULTS,
            )

        def on_diagnostics(array: Any) -> None:
            for status in array.status:
                self.diagnostics[f"{status.hardware_id} {status.name}"] = status

        sub(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_lvlm(self, camera: str) -> Callable[[Any], None]:
        def record(result: Any) -> None:
            self.lvlm[camera].append(result)
            self.lvlm_arrivals[camera].append((time.monotonic(), result))

        return record

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until true; fail with ``what`` after ``timeout`` s."""
        wait_for(condition, timeout, what)

    def wait_ready(self, timeout: float, frame_listeners: int = 3) -> None:
        """Every graph up: its camera topic read, its frame topic fully subscribed."""
        for camera, ns in self.namespaces.items():
            self.wait_for(
                lambda c=camera: self.cameras[c].get_subscription_count() >= 1,
                timeout,
                f"{camera}'s camera_ingest",
            )
            self.wait_for(
                lambda ns=ns: (
                    self.node.count_subscribers(f"{ns}/spotvlm/frame") >= frame_listeners + 1
                ),  # this probe's own subscription too
                timeout,
                f"{ns}'s nodes on spotvlm/frame",
            )

    def publish(self, camera: str, rgb: np.ndarray) -> int:
        """One frame on ``camera``'s topic, stamped now, frame_id = the camera; its stamp."""
        from spotvlm_ros.ros.convert import rgb_to_image

        msg = rgb_to_image(rgb, "bgr8")
        now = self.node.get_clock().now()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = camera
        self.cameras[camera].publish(msg)
        return int(now.nanoseconds)

    def warm_up(self, rgb: np.ndarray, timeout: float) -> None:
        """Publish on each camera until each graph has answered one of its frames."""
        for camera in self.cameras:
            give_up = time.monotonic() + timeout
            while True:
                stamp = self.publish(camera, rgb)
                try:
                    self.wait_for(
                        lambda c=camera, s=stamp: s in {stamp_of_msg(a) for a in self.answers[c]},
                        6.0,
                        "",
                    )
                    break
                except TimeoutError:
                    if time.monotonic() > give_up:
                        raise TimeoutError(f"{camera}: no warm-up frame answered") from None
        time.sleep(0.6)  # the next frames must not be throttled by the warm-up's

    def stream(self, frames: list[np.ndarray], hz: float) -> dict[str, list[int]]:
        """Every camera at ``hz`` (its frames spaced a period apart by their stamps)."""
        period = int(1e9 / hz)
        sent: dict[str, list[int]] = defaultdict(list)
        for rgb in frames:
            for camera in self.cameras:
                if sent[camera]:
                    due = sent[camera][-1] + period
                    while (wait := due - self.node.get_clock().now().nanoseconds) > 0:
                        time.sleep(wait / 1e9)
                sent[camera].append(self.publish(camera, rgb))
        return dict(sent)

    def feed_until(
        self,
        camera: str,
        rgb: np.ndarray,
        condition: Callable[[], bool],
        timeout: float,
        what: str,
        hz: float = 2.0,
    ) -> None:
        """Publish frames on ``camera`` at ``hz`` until ``condition`` holds (for what needs
        frames to happen: a bridge's recovery, a replica tried again), however long that
        takes on this machine; fail with ``what`` after ``timeout`` s."""
        give_up = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > give_up:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            self.publish(camera, rgb)
            time.sleep(1.0 / hz)

    def diagnostic_values(self, key_part: str) -> list[dict[str, str]]:
        """The key/value pairs of every latest status whose key contains ``key_part``."""
        latest = list(self.diagnostics.items())  # the executor thread may add keys meanwhile
        return [
            {v.key: v.value for v in status.values} for key, status in latest if key_part in key
        ]

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown()
        self.node.destroy_node()
