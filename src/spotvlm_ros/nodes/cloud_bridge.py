"""cloud_bridge: uploads frames to the cloud LVLM under the upload policy, publishes results.

Requests run on an asyncio loop in a background thread, at most ``max_in_flight`` at once;
every request ends in an LvlmResult stamped with its source frame's stamp (ok, timeout,
error or rejected), so the graph survives a server that is down, slow or talks garbage.
Health and latency statistics go to /diagnostics.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

from rclpy.node import Node
from std_msgs.msg import Header

from spotvlm_msgs.msg import Frame, LvlmResult, SvlmResult
from spotvlm_ros.cloud.client import (
    LvlmClient,
    LvlmClientConfig,
    LvlmOutcome,
    OutcomeKind,
    request_end,
)
from spotvlm_ros.core.engine import RecentFrames, RequestEnd, UploadRule, Uploads
from spotvlm_ros.core.health import FailureStreak, RecentValues, percentile
from spotvlm_ros.core.parsing import Coordinates, dropped_box_reasons
from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.task import task_question
from spotvlm_ros.core.types import Stamp
from spotvlm_ros.imaging import ImageError
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import (
    detection_publisher,
    detections_to_msg,
    image_to_rgb,
    rois_to_msgs,
    stamp_of,
)
from spotvlm_ros.ros.diagnostics import OK, WARN, DiagnosticsPublisher, status
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import StartupError, run_node

STATUS_OF = {
    OutcomeKind.OK: LvlmResult.STATUS_OK,
    OutcomeKind.TIMEOUT: LvlmResult.STATUS_TIMEOUT,
    OutcomeKind.REJECTED: LvlmResult.STATUS_REJECTED,
    OutcomeKind.BUSY: LvlmResult.STATUS_REJECTED,
}


HELD_FRAMES = 16
"""LAECIPS: the most recent frames cloud_bridge keeps for the SVLM's requests (those within
deadline_s: at most 16 of them, enough for rate_hz x deadline_s up to 16)."""


@dataclass(frozen=True)
class BridgeConfig:
    """cloud_bridge's parameters (besides the client's)."""

    question: str
    max_input_pixels: int


class CloudBridge(Node):
    """Uploads frames and publishes the LVLM's late answers."""

    def __init__(self) -> None:
        super().__init__("cloud_bridge")
        try:
            client_config = LvlmClientConfig(
                base_url=declare(self, "cloud_bridge", "base_url"),
                model=declare(self, "cloud_bridge", "model"),
                api_key_env=declare(self, "cloud_bridge", "api_key_env"),
                timeout=declare(self, "cloud_bridge", "timeout_s"),
                max_in_flight=declare(self, "cloud_bridge", "max_in_flight"),
                max_pixels=declare(self, "cloud_bridge", "upload_max_pixels"),
                jpeg_quality=declare(self, "cloud_bridge", "jpeg_quality"),
                coordinates=Coordinates(declare(self, "cloud_bridge", "coordinates")),
                task=declare(self, "cloud_bridge", "task"),
                task_vocabulary=declare(self, "cloud_bridge", "task_vocabulary"),
                ca_bundle=declare(self, "cloud_bridge", "ca_bundle"),
                max_tokens=declare(self, "cloud_bridge", "max_tokens"),
                endpoint_backoff_s=declare(self, "cloud_bridge", "endpoint_backoff_s"),
                endpoint_max_backoff_s=declare(self, "cloud_bridge", "endpoint_max_backoff_s"),
                user=declare(self, "cloud_bridge", "user"),
                max_reply_bytes=declare(self, "cloud_bridge", "max_reply_bytes"),
                max_rois=declare(self, "cloud_bridge", "max_rois"),
                structured_output=declare(self, "cloud_bridge", "structured_output"),
            )
            policy_config = UploadPolicyConfig(
                mode=UploadMode(declare(self, "cloud_bridge", "upload_mode")),
                max_in_flight=client_config.max_in_flight,
                stride=declare(self, "cloud_bridge", "upload_stride"),
            )
        except ValueError as exc:
            raise StartupError(f"cloud_bridge: bad parameter: {exc}") from exc
        self.config = BridgeConfig(
            question=task_question(
                client_config.task,
                client_config.task_vocabulary,
                declare(self, "cloud_bridge", "question"),
            ),
            max_input_pixels=declare(self, "cloud_bridge", "max_input_pixels"),
        )
        self.warn_after_s = declare(self, "cloud_bridge", "warn_after_s")
        if not client_config.user:  # the robot and camera, by the graph's namespace
            client_config = replace(
                client_config, user=self.get_namespace().strip("/") or "spotvlm"
            )
        self.client_config = client_config
        self.deadline_s = float(declare(self, "cloud_bridge", "deadline_s"))
        try:
            rule = UploadRule(declare(self, "cloud_bridge", "upload_rule"))
        except ValueError as exc:
            raise StartupError(
                f"cloud_bridge: bad parameter: upload_rule must be one of "
                f"{', '.join(r.value for r in UploadRule)} ({exc})"
            ) from exc
        self.uploads = Uploads(UploadPolicy(policy_config), rule, self.deadline_s)
        self.uploads.offload.probe_s = declare(self, "cloud_bridge", "adas_probe_s")
        self.policy = self.uploads.policy
        self._held: RecentFrames[Frame] = RecentFrames(HELD_FRAMES, self.deadline_s)  # LAECIPS
        self.not_held = 0  # LAECIPS: frames asked for after they were let go
        self._policy_lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self._latencies = RecentValues(60.0)  # answered requests' latencies [s]
        self._streak = FailureStreak()
        self._last_error = ""
        self.truncated = 0  # replies cut by max_tokens
        self.rois_cut = 0  # valid ROIs beyond max_rois, not kept
        self.too_large = 0  # replies over max_reply_bytes, not read
        self.boxes_dropped: Counter[str] = Counter()  # invalid boxes in replies, by reason
        self._said_rois_cut = False
        self._said_structured_refused = False
        self._results = self.create_publisher(LvlmResult, topics.LVLM_RESULT, qos.RESULTS)
        self._uploads = self.create_publisher(Header, topics.UPLOADS, qos.RESULTS)
        self._detections = detection_publisher(self, topics.LVLM_DETECTIONS, qos.RESULTS)
        self._diagnostics = DiagnosticsPublisher(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lvlm_client", daemon=True
        )
        self._thread.start()
        try:
            self._client = asyncio.run_coroutine_threadsafe(
                self._make_client(), self._loop
            ).result()
        except ValueError as exc:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise StartupError(f"cloud_bridge: bad parameter: {exc}") from exc
        self.create_subscription(Frame, topics.FRAME, self._on_frame, qos.RESULTS)
        if self.uploads.rule is UploadRule.LAECIPS:
            self.create_subscription(SvlmResult, topics.SVLM_RESULT, self._on_svlm, qos.RESULTS)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"LVLM {client_config.model} at {client_config.base_url} "
            f"({len(client_config.urls)} endpoint(s)), user {client_config.user!r}; "
            f"upload {self._upload_text(policy_config)}, "
            f"max {client_config.max_in_flight} in flight, timeout {client_config.timeout} s"
        )

    def _upload_text(self, policy_config: UploadPolicyConfig) -> str:
        rule = self.uploads.rule
        if rule is UploadRule.ADAS:
            return f"rule adas (while the cloud is predicted within {self.deadline_s} s)"
        if rule is UploadRule.LAECIPS:
            return "rule laecips (the frames the SVLM is unsure of)"
        return policy_config.mode.value

    async def _make_client(self) -> LvlmClient:
        return LvlmClient(self.client_config)

    def _on_frame(self, frame: Frame) -> None:
        stamp = stamp_of(frame.header.stamp)
        now = self.get_clock().now().nanoseconds
        if self.uploads.rule is UploadRule.LAECIPS:  # asked for after the SVLM's answer
            with self._policy_lock:
                self._held.hold(stamp, frame, now)
            return
        with self._policy_lock:
            if not self.uploads.decide(stamp, now).upload:
                return
        self._send(frame, stamp, now)

    def _on_svlm(self, result: SvlmResult) -> None:
        """LAECIPS: the SVLM is unsure of a frame: ask the cloud about it."""
        if result.status != SvlmResult.STATUS_OK:
            return
        stamp = stamp_of(result.header.stamp)
        with self._policy_lock:
            if not self.uploads.decide_after_svlm(result.cloud_requested).upload:
                return
            first, frame = self._held.take(stamp)
        if not first:  # a redelivered result: its request is under way
            return
        if frame is None:  # said at once, so that context_manager does not wait for it
            self.not_held += 1
            held = Frame(header=result.header, seq=result.frame_seq)
            why = (
                "the SVLM asked for the cloud, but the frame is no longer held "
                f"(cloud_bridge keeps the last {HELD_FRAMES} frames within deadline_s)"
            )
            self._publish(held, LvlmOutcome(OutcomeKind.BAD_INPUT, 0.0, error=why))
            return
        self._send(frame, stamp, self.get_clock().now().nanoseconds)

    def _send(self, frame: Frame, stamp: Stamp, now: Stamp) -> None:
        """Upload the frame (the rule decided so)."""
        # said first, before the conversion, so that an ADAS-offloaded frame reaches
        # svlm_node's skip_offloaded as early as it can
        self._uploads.publish(Header(stamp=frame.header.stamp, frame_id=frame.header.frame_id))
        try:
            rgb = image_to_rgb(frame.image, self.config.max_input_pixels)
        except ImageError as exc:
            with self._policy_lock:
                self.uploads.on_outcome(stamp, now, RequestEnd.FAILED)
            self._publish(frame, LvlmOutcome(OutcomeKind.BAD_INPUT, 0.0, error=str(exc)))
            return
        future = asyncio.run_coroutine_threadsafe(
            self._client.ask(rgb, self.config.question), self._loop
        )
        future.add_done_callback(functools.partial(self._on_done, frame))

    def _on_done(self, frame: Frame, future: object) -> None:
        try:
            outcome = future.result()  # type: ignore[attr-defined]
        except Exception as exc:  # the client never raises; this guards the bridge anyway
            outcome = LvlmOutcome(OutcomeKind.HTTP_ERROR, 0.0, error=repr(exc))
        now = self.get_clock().now().nanoseconds
        try:
            with self._policy_lock:
                self.uploads.on_outcome(
                    stamp_of(frame.header.stamp),
                    now,
                    request_end(outcome),
                    outcome.latency,
                    outcome.retry_after,
                )
            if outcome.retry_after is not None:
                then = {
                    UploadRule.POLICY: f"then at most every {self.policy.pressure_at(now):.1f}x"
                    " the usual spacing until answers come back",
                    UploadRule.ADAS: "and ADAS counts the cloud as late",
                    UploadRule.LAECIPS: "the SVLM's requests refused unsent until then or "
                    "until an answer comes back",
                }[self.uploads.rule]
                self.get_logger().warning(
                    f"LVLM asked for less load ({outcome.error[:160]}): uploads wait "
                    f"{outcome.retry_after:.1f} s, {then}",
                    throttle_duration_sec=5.0,
                )
        finally:  # this runs on the client's loop thread: the result is published whatever
            self._publish(frame, outcome)

    def _publish(self, frame: Frame, outcome: LvlmOutcome) -> None:
        with self._policy_lock:  # the diagnostics timer reads it from the executor thread
            self.outcomes[outcome.kind.value] += 1
        now = self.get_clock().now().nanoseconds
        if outcome.kind not in (OutcomeKind.BUSY, OutcomeKind.BAD_INPUT):  # never sent: it
            self._streak.record(now, outcome.ok)  # says nothing of the cloud
        if self._client.structured_refused and not self._said_structured_refused:
            self._said_structured_refused = True
            self.get_logger().warning(
                "the LVLM server refused response_format (structured_output): asking with "
                f"plain prompting from now on ({self._client.structured_refused})"
            )
        if outcome.truncated:
            with self._policy_lock:
                self.truncated += 1
            self.get_logger().warning(
                f"LVLM reply for frame {frame.seq} was cut by max_tokens "
                f"{self.client_config.max_tokens}: its JSON may have lost ROIs "
                "(raise cloud_bridge's max_tokens or the server's limit)",
                throttle_duration_sec=10.0,
            )
        dropped = dropped_box_reasons(outcome.problems)
        if dropped or outcome.rois_cut:
            with self._policy_lock:
                self.boxes_dropped.update(dropped)
                self.rois_cut += outcome.rois_cut
            if dropped:
                self.get_logger().warning(
                    f"LVLM reply for frame {frame.seq}: {sum(dropped.values())} invalid box(es) "
                    f"dropped ({', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))}; "
                    f"totals in diagnostics)",
                    throttle_duration_sec=10.0,
                )
            if outcome.rois_cut and not self._said_rois_cut:
                self._said_rois_cut = True
                self.get_logger().warning(
                    f"LVLM reply for frame {frame.seq} held {len(outcome.rois) + outcome.rois_cut}"
                    f" ROIs: kept the {len(outcome.rois)} highest-scoring (max_rois); later "
                    "cuts are counted in diagnostics (rois_cut)"
                )
        if outcome.too_large:  # said apart from the other failures
            with self._policy_lock:
                self.too_large += 1
            self.get_logger().warning(
                f"LVLM reply for frame {frame.seq} refused: {outcome.error} (a grounding reply "
                "is a few KB; raise cloud_bridge's max_reply_bytes if yours are larger)",
                throttle_duration_sec=10.0,
            )
        if outcome.ok:
            self._latencies.add(now, outcome.latency)
        else:
            self._last_error = f"{outcome.kind.value}: {outcome.error}"[:300]
            self.get_logger().warning(
                f"LVLM request for frame {frame.seq} failed: {self._last_error}",
                throttle_duration_sec=5.0,
            )
        msg = LvlmResult(header=frame.header, frame_seq=frame.seq, question=self.config.question)
        msg.receive_time = self.get_clock().now().to_msg()
        msg.latency = float(outcome.latency)
        msg.answer = outcome.answer
        msg.labels = sorted(outcome.labels)
        msg.rois = rois_to_msgs(outcome.rois)
        msg.model = outcome.model or self.client_config.model
        msg.status = STATUS_OF.get(outcome.kind, LvlmResult.STATUS_ERROR)
        msg.error = "" if outcome.ok else f"{outcome.kind.value}: {outcome.error}"
        if outcome.ok and outcome.truncated:  # an answer, with a warning about it
            msg.error = "truncated: " + "; ".join(outcome.problems)[:300]
        self._results.publish(msg)
        if outcome.ok and self._detections is not None:
            self._detections.publish(detections_to_msg(frame.header, outcome.rois))

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now().nanoseconds
        failing = self._streak.failing_for(now)
        recent = self._latencies.values(now)
        with self._policy_lock:
            outcomes = Counter(self.outcomes)
        total = sum(outcomes.values())
        failures = total - outcomes["ok"]
        p95 = percentile(recent, 0.95) if recent else None
        if total == 0:
            level, message = OK, "no requests yet"
        elif failing >= self.warn_after_s:
            level, message = WARN, f"no LVLM answer for {failing:.0f} s: {self._last_error}"
        else:
            level = OK
            message = f"{outcomes['ok']} answered, {failures} failed" + (
                f"; p95 latency {p95:.2f} s" if p95 is not None else ""
            )
        values = {
            "latency_p50_s": percentile(recent, 0.5) if recent else None,
            "latency_p95_s": p95,
            "latency_max_s": max(recent) if recent else None,
            "failing_for_s": failing,
            "in_flight": self.policy.in_flight,
            "skipped_by_policy": self.uploads.skipped,
            "upload_rule": self.uploads.rule.value,
            **self._rule_values(),
            "truncated_replies": self.truncated,
            "rois_cut": self.rois_cut,
            "replies_too_large": self.too_large,
            **{f"boxes_dropped_{k}": v for k, v in sorted(self.boxes_dropped.items())},
            "upload_pressure": self.policy.pressure_at(now),
            "backoffs": self.uploads.backoffs,
            **{
                f"endpoint {u}": v
                for u, v in self._client.pool.summary(time.monotonic_ns()).items()
            },
            "structured_output": (
                "refused by the server"
                if self._client.structured_refused
                else str(self.client_config.structured_output).lower()
            ),
            "last_error": self._last_error,
            **{f"outcome_{k}": v for k, v in sorted(outcomes.items())},
        }
        url = self.client_config.base_url
        self._diagnostics.publish([status("cloud_bridge: LVLM", url, level, message, values)])

    def _rule_values(self) -> dict[str, object]:
        """The baselines' rules' own diagnostics."""
        if self.uploads.rule is UploadRule.ADAS:
            return {"adas_predicted_round_trip_s": self.uploads.offload.predicted_s}
        if self.uploads.rule is UploadRule.LAECIPS:
            return {"laecips_not_held": self.not_held}
        return {}

    def close(self) -> None:
        """Close the HTTP client and stop its loop."""
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=5.0)
        except Exception as exc:
            self.get_logger().warning(f"closing the LVLM client: {exc!r}")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        self.get_logger().info(
            f"LVLM outcomes: {dict(self.outcomes)}, skipped {self.uploads.skipped}"
        )


def main(args: list[str] | None = None) -> int:
    """Run cloud_bridge until shutdown."""
    return run_node(CloudBridge, args)


if __name__ == "__main__":
    sys.exit(main())
