"""camera_ingest: validates and throttles the camera stream into numbered spotvlm frames.

Subscribes to a camera topic with sensor-data QoS, admits frames at the task rate, rejects
bad ones (encoding, size, truncated data, stamps in the future or too old) with a counted,
rate-limited warning, and republishes the admitted ones as spotvlm_msgs/Frame.

The topic follows image_transport's naming: ``input_topic`` is the base name; with
``transport: auto`` the node takes whatever is published there (sensor_msgs/Image) or on
``<input_topic>/compressed`` (CompressedImage), or ``input_topic`` itself when a bag or
driver publishes CompressedImage on it (``/CAM_FRONT/image_rect_compressed``). When no
frame arrives within ``no_input_warning_s`` it says so, naming the image topics it can
see with their types and QoS, and how to point it at one of them.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from spotvlm_msgs.msg import Frame
from spotvlm_ros.core.health import RecentValues
from spotvlm_ros.core.types import NS_PER_S, seconds_between
from spotvlm_ros.imaging import SUPPORTED_ENCODINGS, ImageError
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import compressed_to_rgb, rgb_to_image, stamp_of
from spotvlm_ros.ros.diagnostics import OK, WARN, DiagnosticsPublisher, status
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import StartupError, run_node

TRANSPORTS = ("auto", "raw", "compressed")


def _type_name(cls: type) -> str:
    """``sensor_msgs/msg/Image`` for the Image class (the graph API's spelling)."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


@dataclass(frozen=True)
class IngestConfig:
    """camera_ingest's parameters."""

    input_topic: str
    transport: str
    rate_hz: float
    max_input_pixels: int
    max_future_s: float
    max_age_s: float
    no_input_warning_s: float
    frame_listeners_wait_s: float
    frame_listeners: tuple[str, ...]


class CameraIngest(Node):
    """Admits camera frames into the graph."""

    def __init__(self) -> None:
        super().__init__("camera_ingest")
        self.config = IngestConfig(
            input_topic=declare(self, "camera_ingest", "input_topic"),
            transport=declare(self, "camera_ingest", "transport"),
            rate_hz=declare(self, "camera_ingest", "rate_hz"),
            max_input_pixels=declare(self, "camera_ingest", "max_input_pixels"),
            max_future_s=declare(self, "camera_ingest", "max_future_s"),
            max_age_s=declare(self, "camera_ingest", "max_age_s"),
            no_input_warning_s=declare(self, "camera_ingest", "no_input_warning_s"),
            frame_listeners=tuple(declare(self, "camera_ingest", "frame_listeners")),
            frame_listeners_wait_s=declare(self, "camera_ingest", "frame_listeners_wait_s"),
        )
        if not all(name and "/" not in name for name in self.config.frame_listeners):
            raise StartupError(
                f"camera_ingest: frame_listeners {list(self.config.frame_listeners)} must be "
                "node names without a namespace (e.g. svlm_node)"
            )
        if self.config.transport not in TRANSPORTS:
            raise StartupError(
                f"camera_ingest: transport {self.config.transport!r} must be one of "
                f"{', '.join(TRANSPORTS)}"
            )
        self.rejected: Counter[str] = Counter()
        self.received = 0
        self.admitted = 0
        self._last_admit_ns: int | None = None
        self._publisher = self.create_publisher(Frame, topics.FRAME, qos.RESULTS)
        self._diagnostics = DiagnosticsPublisher(self)
        self._admitted_recent = RecentValues(10.0)
        self._rejected_recent = RecentValues(10.0)
        self.subscribed: list[tuple[str, type]] = []
        self._started_ns = self.get_clock().now().nanoseconds
        self._last_input_ns: int | None = None
        self._ready_ns: int | None = None  # when the graph first listened for frames
        self._subscribed_ns = 0  # when the camera was taken
        self._last_warning_ns = 0
        self._warned_about: list[str] | None = None
        self.base_topic = self.resolve_topic_name(self.config.input_topic)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.5, self._watch_input)
        self._watch_input()
        if not self.subscribed:
            self.get_logger().info(
                f"waiting for a camera on {self.base_topic} (transport {self.config.transport}: "
                f"{' or '.join(f'{t} [{c.__name__}]' for t, c in self._candidates())})"
            )

    def _candidates(self) -> list[tuple[str, type]]:
        """The (topic, type) pairs this transport accepts, in order of preference."""
        base, compressed = self.base_topic, f"{self.base_topic}/compressed"
        raw_options = [(base, Image)]
        compressed_options = [(base, CompressedImage), (compressed, CompressedImage)]
        if self.config.transport == "raw":
            return raw_options
        if self.config.transport == "compressed":
            return compressed_options
        return raw_options + compressed_options

    def _watch_input(self) -> None:
        """Subscribe once a publisher appears on an accepted topic and the graph listens for
        frames; warn while no frame arrives although the graph is ready for them."""
        now = self.get_clock().now().nanoseconds
        if not self.subscribed:
            missing = self._listeners_missing()
            if not missing and self._ready_ns is None:
                self._ready_ns = now
            published = dict(self.get_topic_names_and_types())
            candidates = self._candidates()
            found = [(t, c) for t, c in candidates if _type_name(c) in published.get(t, [])]
            if not found and self.config.transport != "auto":
                # a fixed transport subscribes at once, so that a driver that starts later
                # is met as by any ROS subscriber: compressed on <base> and <base>/compressed
                found = candidates
            waited = seconds_between(self._started_ns, now)
            if found and (not missing or waited >= self.config.frame_listeners_wait_s):
                if missing:
                    self._warn_taking_anyway(missing)
                for topic, cls in found[:1] if self.config.transport == "auto" else found:
                    self._subscribe(topic, cls)
                self._ready_ns = self._ready_ns or now
                self._subscribed_ns = now
            elif self._ready_ns is None:
                # Frames are not wanted yet (svlm_node subscribes once its model is loaded;
                # the launch file holds the bag until then): say so, not that none arrives
                if waited >= self.config.no_input_warning_s:
                    self.get_logger().info(
                        f"waiting for {', '.join(missing)} to listen on "
                        f"{self._publisher.topic_name} before taking the camera "
                        f"({waited:.0f} s; svlm_node listens once its model is loaded)",
                        throttle_duration_sec=30.0,
                    )
                return
        silent_since = self._silent_since()
        if seconds_between(silent_since, now) < self.config.no_input_warning_s:
            return
        # Said again every 30 s, and at once when the image topics on the graph change (a
        # bag player or driver that starts on another topic is named as soon as it appears)
        seen = self._image_topics()
        repeat = max(30.0, self.config.no_input_warning_s)
        if seen == self._warned_about and seconds_between(self._last_warning_ns, now) < repeat:
            return
        self._last_warning_ns, self._warned_about = now, seen
        self.get_logger().warning(self._no_input_message(seconds_between(silent_since, now), seen))

    def _silent_since(self) -> int:
        """Since when a frame has been due and none has come: the last frame, or the moment
        the graph was ready for frames, or the subscription to the camera (node clock, ns)."""
        return max(
            self._last_input_ns or 0, self._ready_ns or self._started_ns, self._subscribed_ns
        )

    def _listeners_missing(self) -> list[str]:
        """What the camera still waits for: the frame_listeners not seen subscribing to the
        frames, or (all seen) the subscribers not yet matched with this publisher.

        A frame published before a reader has matched this publisher never reaches it,
        reliable QoS or not: after a respawn of this node, context_manager lost the first
        frames that way and never answered them. So the camera is taken once every node
        named in frame_listeners has been discovered subscribing and every discovered
        subscriber has matched (or after frame_listeners_wait_s, with a warning). Listeners
        are named, not counted: a recorder or probe on the topic must not stand in for a
        node of the graph that is not there yet.
        """
        namespace = self.get_namespace()
        present = {
            info.node_name
            for info in self.get_subscriptions_info_by_topic(self._publisher.topic_name)
            if info.node_namespace == namespace
        }
        missing = [name for name in self.config.frame_listeners if name not in present]
        matched = self._publisher.get_subscription_count()
        known = self.count_subscribers(self._publisher.topic_name)
        if missing or matched >= known:
            return missing
        return [f"{known - matched} of {known} subscribers (not yet matched)"]

    def _warn_taking_anyway(self, missing: list[str]) -> None:
        self.get_logger().warning(
            f"taking the camera although {', '.join(missing)} not listening on "
            f"{self._publisher.topic_name} after {self.config.frame_listeners_wait_s:.0f} s: "
            "frames they miss are not answered. Is the rest of the graph running (same "
            "namespace and ROS_DOMAIN_ID)?"
        )

    def _subscribe(self, topic: str, cls: type) -> None:
        self.subscribed.append((topic, cls))
        self.create_subscription(cls, topic, self._on_image, qos.CAMERA)
        self.get_logger().info(
            f"admitting {cls.__name__} from {topic} at {self.config.rate_hz:.2f} Hz; "
            f"supported encodings: {', '.join(SUPPORTED_ENCODINGS)}"
            f"{' (compressed: jpeg/png)' if cls is CompressedImage else ''}"
        )

    def _image_topics(self) -> list[str]:
        """The image topics published now, other than the graph's own, with their types,
        publisher counts and reliability."""
        seen = []
        image_types = {_type_name(Image), _type_name(CompressedImage)}
        for topic, types in self.get_topic_names_and_types():
            if "/spotvlm/" in f"{topic}/":
                continue
            for type_name in sorted(set(types) & image_types):
                infos = self.get_publishers_info_by_topic(topic)
                if not infos:
                    continue
                reliability = {i.qos_profile.reliability.name.lower() for i in infos}
                seen.append(
                    f"{topic} [{type_name.split('/')[-1]}, {len(infos)} publisher(s), "
                    f"{'/'.join(sorted(reliability))}]"
                )
        return sorted(seen)

    def _no_input_message(self, silent_s: float, seen: list[str]) -> str:
        """What is wrong when no frame arrives, and what to change."""
        listening = (
            "listening on " + " and ".join(f"{t} [{c.__name__}]" for t, c in self.subscribed)
            if self.subscribed
            else f"no camera publisher on {self.base_topic} or {self.base_topic}/compressed"
        )
        hint = (
            "image topics published now: " + "; ".join(sorted(seen)) + ". Point camera_ingest "
            "at one with camera_topic:=TOPIC (launch) or -p input_topic:=TOPIC"
            if seen
            else "no image topic is published at all: is the camera driver or the bag player "
            "running, in the same ROS_DOMAIN_ID?"
        )
        fed = [t for t, _ in self.subscribed if self.count_publishers(t) > 0]
        if fed:  # someone publishes where this node listens, and nothing arrives
            what = (
                "yet no frame arrived"
                if self.received == 0
                else "but its frames stopped arriving (it stopped publishing, or they grew)"
            )
            hint = (
                f"{' and '.join(fed)} has a publisher, {what}: DDS drops a message larger than "
                f"its transport carries without an error ({TRANSPORT_LIMIT}); lower the "
                "camera's resolution, or publish CompressedImage"
            )
        return f"no camera frame for {silent_s:.0f} s ({listening}); {hint}"

    def close(self) -> None:
        """Log the totals on shutdown."""
        self.get_logger().info(
            f"received {self.received}, admitted {self.admitted}, rejected {dict(self.rejected)}"
        )

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._rejected_recent.add(self.get_clock().now().nanoseconds, 1.0)
        self.get_logger().warning(
            f"rejected frame ({reason}): {detail} [{self.rejected[reason]} so far]",
            throttle_duration_sec=5.0,
        )

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.received += 1
        now = self.get_clock().now().nanoseconds
        self._last_input_ns = now
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
        self._admitted_recent.add(now, 1.0)
        self._publisher.publish(frame)

    def _validated(self, msg: Image | CompressedImage) -> Image:
        if isinstance(msg, CompressedImage):
            image = rgb_to_image(compressed_to_rgb(msg, self.config.max_input_pixels), "bgr8")
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
        if msg.width * msg.height > self.config.max_input_pixels:
            raise ImageError(
                f"{msg.width}x{msg.height} exceeds max_input_pixels {self.config.max_input_pixels}"
            )
        if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
            raise ImageError(
                f"data of {len(msg.data)} bytes (step {msg.step}) is truncated for "
                f"{msg.width}x{msg.height} {msg.encoding}"
            )
        return msg

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now().nanoseconds
        topic = self.subscribed[0][0] if self.subscribed else self.base_topic
        silent = seconds_between(self._silent_since(), now)
        rate = self._admitted_recent.rate(now)
        if self._ready_ns is None and not self.subscribed:
            level, message = OK, "waiting for the graph to listen for frames"
        elif silent >= self.config.no_input_warning_s:
            level, message = WARN, f"no camera frame for {silent:.0f} s on {topic}"
        elif recent_rejections := len(self._rejected_recent.values(now)):
            level = WARN
            message = f"{rate:.1f} frames/s admitted; {recent_rejections} rejected in 10 s"
        else:
            level, message = OK, f"{rate:.1f} frames/s admitted"
        values = {
            "admitted_rate_hz": rate,
            "received": self.received,
            "admitted": self.admitted,
            "seconds_since_last_frame": silent,
            **{f"rejected_{k}": v for k, v in sorted(self.rejected.items())},
        }
        self._diagnostics.publish([status("camera_ingest: input", topic, level, message, values)])


TRANSPORT_LIMIT = (
    "with config/fastdds.xml, up to 32 MiB over shared memory, e.g. 3840x2160 bgr8 (25 MB); "
    "without "
    "it, or best effort over UDP from another host, camera-sized frames can be lost too"
)
"""What the transport carries, for the warning about frames that never arrive."""


def main(args: list[str] | None = None) -> int:
    """Run camera_ingest until shutdown."""
    return run_node(CameraIngest, args)


if __name__ == "__main__":
    sys.exit(main())
