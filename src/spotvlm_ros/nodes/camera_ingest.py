"""camera_ingest: validates and throttles the camera stream into numbered spotvlm frames.

Subscribes to a camera topic (sensor_msgs/Image, or CompressedImage with
``compressed:=true``) with sensor-data QoS, admits frames at the task rate, rejects bad
ones (encoding, size, truncated data, stamps in the future or too old) with a counted,
rate-limited warning, and republishes the admitted ones as spotvlm_msgs/Frame.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from spotvlm_msgs.msg import Frame
from spotvlm_ros.core.types import NS_PER_S, seconds_between
from spotvlm_ros.imaging import SUPPORTED_ENCODINGS, ImageError
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import compressed_to_rgb, rgb_to_image, stamp_of
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import run_node


@dataclass(frozen=True)
class IngestConfig:
    """camera_ingest's parameters."""

    input_topic: str
    compressed: bool
    rate_hz: float
    max_pixels: int
    max_future_s: float
    max_age_s: float


class CameraIngest(Node):
    """Admits camera frames into the graph."""

    def __init__(self) -> None:
        super().__init__("camera_ingest")
        self.config = IngestConfig(
            input_topic=declare(self, "input_topic", topics.CAMERA, "camera topic to subscribe to"),
            compressed=declare(
                self,
                "compressed",
                False,
                "subscribe to sensor_msgs/CompressedImage instead of Image",
            ),
            rate_hz=declare(
                self, "rate_hz", 2.0, "frames admitted per second (task rate)", low=0.05, high=30.0
            ),
            max_pixels=declare(
                self, "max_pixels", 4096 * 4096, "larger frames are rejected", low=1, high=2**31 - 1
            ),
            max_future_s=declare(
                self,
                "max_future_s",
                1.0,
                "frames stamped further in the future are rejected [s]",
                low=0.0,
                high=3600.0,
            ),
            max_age_s=declare(
                self,
                "max_age_s",
                10.0,
                "frames older than this on arrival are rejected; 0 disables [s]",
                low=0.0,
                high=1e9,
            ),
        )
        self.rejected: Counter[str] = Counter()
        self.received = 0
        self.admitted = 0
        self._last_admit_ns: int | None = None
        self._publisher = self.create_publisher(Frame, topics.FRAME, qos.RESULTS)
        self._diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        msg_type = CompressedImage if self.config.compressed else Image
        self.create_subscription(msg_type, self.config.input_topic, self._on_image, qos.CAMERA)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"admitting {msg_type.__name__} from {self.config.input_topic} at "
            f"{self.config.rate_hz:.2f} Hz; supported encodings: {', '.join(SUPPORTED_ENCODINGS)}"
            f"{' (compressed: jpeg/png)' if self.config.compressed else ''}"
        )

    def close(self) -> None:
        """Log the totals on shutdown."""
        self.get_logger().info(
            f"received {self.received}, admitted {self.admitted}, rejected {dict(self.rejected)}"
        )

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.get_logger().warning(
            f"rejected frame ({reason}): {detail} [{self.rejected[reason]} so far]",
            throttle_duration_sec=5.0,
        )

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.received += 1
        now = self.get_clock().now().nanoseconds
        stamp = stamp_of(msg.header.stamp)
        if seconds_between(now, stamp) > self.config.max_future_s:
            self._reject("future_stamp", f"stamp {seconds_between(now, stamp):.1f} s ahead of now")
            return
        age = seconds_between(stamp, now)
        if self.config.max_age_s > 0 and age > self.config.max_age_s:
            self._reject("old_stamp", f"stamp {age:.1f} s old (max_age_s {self.config.max_age_s})")
            return
        period_ns = NS_PER_S / self.config.rate_hz
        # Admit at the task rate, by the frames' own stamps (free of transport jitter); 10 %
        # slack so that a camera running at exactly the task rate is not halved. A stamp
        # that goes backwards (a bag starting over) restarts the throttle.
        last = self._last_admit_ns
        if last is not None and 0 <= stamp - last < 0.9 * period_ns:
            return
        try:
            image = self._validated(msg)
        except ImageError as exc:
            self._reject("bad_image", str(exc))
            return
        self._last_admit_ns = stamp
        frame = Frame(header=msg.header, seq=self.admitted, image=image)
        frame.ingest_time = self.get_clock().now().to_msg()
        self.admitted += 1
        self._publisher.publish(frame)

    def _validated(self, msg: Image | CompressedImage) -> Image:
        if isinstance(msg, CompressedImage):
            image = rgb_to_image(compressed_to_rgb(msg, self.config.max_pixels), "bgr8")
            image.header = msg.header
            return image
        if msg.encoding not in SUPPORTED_ENCODINGS:
            raise ImageError(
                f"unsupported encoding {msg.encoding!r}; "
                f"supported: {', '.join(SUPPORTED_ENCODINGS)}"
            )
        channels = 1 if msg.encoding == "mono8" else 3
        if msg.width == 0 or msg.height == 0:
            raise ImageError(f"image size {msg.width}x{msg.height} is empty")
        if msg.width * msg.height > self.config.max_pixels:
            raise ImageError(
                f"{msg.width}x{msg.height} exceeds max_pixels {self.config.max_pixels}"
            )
        if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
            raise ImageError(
                f"data of {len(msg.data)} bytes (step {msg.step}) is truncated for "
                f"{msg.width}x{msg.height} {msg.encoding}"
            )
        return msg

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(
            name="spotvlm: camera_ingest", hardware_id=self.config.input_topic
        )
        status.level = DiagnosticStatus.WARN if self.rejected else DiagnosticStatus.OK
        if self.received == 0:
            status.level, status.message = DiagnosticStatus.WARN, "no frames received"
        else:
            status.message = f"{self.admitted} admitted, {sum(self.rejected.values())} rejected"
        status.values = [
            KeyValue(key="received", value=str(self.received)),
            KeyValue(key="admitted", value=str(self.admitted)),
        ] + [KeyValue(key=f"rejected_{k}", value=str(v)) for k, v in sorted(self.rejected.items())]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    """Run camera_ingest until shutdown."""
    return run_node(CameraIngest, args)


if __name__ == "__main__":
    sys.exit(main())
