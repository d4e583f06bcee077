"""context_manager: owns the history and the ROIs, and decides each frame's final answer.

- context replacement: late LVLM answers replace the SVLM's own turns (core.context);
- ROI hand-over: the newest LVLM ROIs go to the SVLM with their source stamp;
- real-time arbitration of every frame against the deadline (core.arbiter);
- an overlay image and ImageMarker boxes for RViz / Foxglove, and the ROIs behind each
  answer as vision_msgs/Detection2DArray.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from visualization_msgs.msg import ImageMarker

from spotvlm_msgs.msg import Answer, ContextUpdate, Frame, LvlmResult, SvlmResult
from spotvlm_ros.core.arbiter import Arbiter, Candidate, Decision, LiveArbiter
from spotvlm_ros.core.context import ContextConfig, ReplacementOutcome
from spotvlm_ros.core.engine import ContextState
from spotvlm_ros.core.health import FailureStreak
from spotvlm_ros.core.ledger import FrameLedger, Losses, launcher_identity
from spotvlm_ros.core.types import Roi, Source, Stamp, seconds_between
from spotvlm_ros.core.worker import LatestWorker
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import (
    MAX_LABELS_IN,
    MAX_ROIS_IN,
    bounded_text,
    cut_count,
    detection_publisher,
    detections_to_msg,
    entries_to_msgs,
    image_to_rgb,
    rgb_to_image,
    rois_from_msgs,
    rois_to_msgs,
    stamp_of,
    to_time,
)
from spotvlm_ros.ros.diagnostics import OK, WARN, DiagnosticsPublisher, status
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import StartupError, run_node

OverlayJob = tuple[Frame, Decision, list[Roi], Stamp | None]
"""What the overlay worker draws: the frame, its decision, the ROIs behind it and their frame."""


@dataclass(frozen=True)
class ManagerConfig:
    """context_manager's parameters."""

    question: str
    deadline_s: float
    publish_overlay: bool
    frames_kept: int


class ContextManager(Node):
    """History, ROIs, arbitration and overlays."""

    def __init__(self) -> None:
        super().__init__("context_manager")
        try:
            context_config = ContextConfig(
                max_entries=declare(self, "context_manager", "history_size"),
                delta=declare(self, "context_manager", "max_delay_s"),
            )
        except ValueError as exc:
            raise StartupError(f"context_manager: bad parameter: {exc}") from exc
        self.config = ManagerConfig(
            question=declare(self, "context_manager", "question"),
            deadline_s=declare(self, "context_manager", "deadline_s"),
            publish_overlay=declare(self, "context_manager", "publish_overlay"),
            frames_kept=declare(self, "context_manager", "frames_kept"),
        )
        self.warn_after_s = declare(self, "context_manager", "warn_after_s")
        self._asked = self.config.question  # '' until a model's result says what it was asked
        ledger_dir = declare(self, "context_manager", "ledger_dir")
        self._ledger = FrameLedger(
            Path(ledger_dir) if ledger_dir else ros_home() / "spotvlm",
            self.get_fully_qualified_name(),
            os.environ.get("ROS_DOMAIN_ID", "0"),
            launcher_identity(),
        )
        self.lost = 0
        self._lost_at: Stamp | None = None
        self._losses: Losses | None = None
        self._read_ledger()
        self._streak = FailureStreak()
        self._diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0, self._publish_diagnostics)
        self.state = ContextState(context_config)
        self.history = self.state.history
        self.arbiter = LiveArbiter(Arbiter(self.config.deadline_s))
        self._frames: OrderedDict[Stamp, Frame] = OrderedDict()
        self._roi_sets: OrderedDict[Stamp, list[Roi]] = OrderedDict()
        # frame -> ROI source stamp the SVLM used (a result that comes after its frame's
        # decision is never collected: bounded like the frames)
        self._svlm_rois: OrderedDict[Stamp, Stamp] = OrderedDict()
        self._revision = 0
        self.answers = {s.name: 0 for s in Source}
        self._answers = self.create_publisher(Answer, topics.ANSWER, qos.ANSWERS)
        self._context_pub = self.create_publisher(ContextUpdate, topics.CONTEXT, qos.LATCHED)
        self._overlay = self.create_publisher(Image, topics.OVERLAY, qos.RESULTS)
        self._markers = self.create_publisher(ImageMarker, topics.ROI_MARKERS, qos.RESULTS)
        self._detections = detection_publisher(self, topics.DETECTIONS, qos.RESULTS)
        # Every callback runs on the node's one executor thread (ros/spin.py), so the state
        # above needs no lock; the overlay worker gets its work only through offer().
        sub = self.create_subscription
        sub(Frame, topics.FRAME, self._on_frame, qos.RESULTS)
        sub(SvlmResult, topics.SVLM_RESULT, self._on_svlm, qos.RESULTS)
        sub(LvlmResult, topics.LVLM_RESULT, self._on_lvlm, qos.RESULTS)
        sub(Header, topics.UPLOADS, self._on_upload, qos.RESULTS)
        # Fires just after the oldest pending frame's deadline (re-armed on every change), so
        # a frame without an answer in time is decided on time, and an idle node sleeps.
        self._deadline_timer = self.create_timer(1.0, self._on_deadline)
        self._deadline_timer.cancel()
        # Overlays are drawn off the decision path, latest first: a slow drawing never delays
        # an answer, and an overlay superseded before it is drawn is skipped (and counted).
        self.overlays_skipped = 0
        self.rois_cut = 0  # ROIs beyond MAX_ROIS_IN in received LVLM results
        self._overlays: LatestWorker[OverlayJob] = LatestWorker(
            "overlays",
            lambda job: self._publish_overlay(*job),
            on_superseded=self._overlay_skipped,
            on_error=self._overlay_failed,
        )
        self.get_logger().info(
            f"history K={context_config.max_entries}, delta {context_config.delta} s, "
            f"deadline {self.config.deadline_s} s"
        )

    # --- inputs -------------------------------------------------------------------------

    def _now(self) -> Stamp:
        return self.get_clock().now().nanoseconds

    def _read_ledger(self) -> None:
        """Count what a killed predecessor (same launcher) left unanswered."""
        log = self.get_logger()
        try:
            for path in self._ledger.leftovers():
                log.info(f"removed {path}: left by a launch that no longer runs")
            losses = self._ledger.previous()
            self._ledger.flush()  # a second kill before any frame must not count these twice
        except OSError as exc:
            log.warning(
                f"frame ledger {self._ledger.path} unusable ({exc}): losses at a "
                "restart will not be counted"
            )
            return
        if losses is None:
            return
        self._losses = losses
        if losses.pending:
            self._count_lost(
                len(losses.pending),
                f"{len(losses.pending)} frame(s) (seq {list(losses.pending)}) were pending "
                "an answer when the previous context_manager died: lost",
            )
        else:
            log.info("restarted: the previous context_manager had no frame pending")

    def _count_lost(self, n: int, why: str) -> None:
        self.lost += n
        self._lost_at = self._now()
        self.get_logger().warning(why)

    def _on_frame(self, frame: Frame) -> None:
        stamp = stamp_of(frame.header.stamp)
        if self._losses is not None:  # the first frame after a restart
            gap = self._losses.gap(frame.seq)
            self._losses = None
            if gap is None:
                self.get_logger().warning(
                    f"frame numbering restarted (seq {frame.seq}): camera_ingest restarted "
                    "too; frames admitted while context_manager was down cannot be counted"
                )
            elif gap:
                self._count_lost(
                    gap,
                    f"{gap} frame(s) were admitted while no context_manager listened "
                    f"(seq {frame.seq - gap}..{frame.seq - 1}): lost",
                )
        self._ledger.admit(stamp, frame.seq)
        self._frames[stamp] = frame
        bound(self._frames, self.config.frames_kept)
        forced = self.arbiter.register(stamp)
        self._emit(forced)
        self._arm_deadline()

    def _on_upload(self, header: Header) -> None:
        decision = self.arbiter.expect_lvlm(stamp_of(header.stamp))
        self._emit([decision] if decision else [])
        self._arm_deadline()

    def _on_svlm(self, result: SvlmResult) -> None:
        stamp = stamp_of(result.header.stamp)
        decided: list[Decision] = []
        if result.roi_used:
            self._svlm_rois[stamp] = stamp_of(result.roi_source_stamp)
            bound(self._svlm_rois, self.config.frames_kept)
        if result.status == SvlmResult.STATUS_OK:
            answer = bounded_text(result.answer)
            self._asked = self.config.question or bounded_text(result.question)
            self.state.on_svlm(stamp, bounded_text(result.question), answer)
            labels = frozenset(result.labels[:MAX_LABELS_IN])
            candidate = Candidate(Source.SVLM, answer, labels, self._now())
            if result.cloud_requested:  # LAECIPS: the cloud's answer may replace it in time
                self.arbiter.expect_lvlm(stamp)
            decision = self.arbiter.offer(stamp, candidate)
            decided = [decision] if decision else []
            update = self._context_update()
        else:
            update = None
        self._emit(decided)
        self._arm_deadline()
        if update is not None:
            self._context_pub.publish(update)

    def _on_lvlm(self, result: LvlmResult) -> None:
        stamp = stamp_of(result.header.stamp)
        arrival = self._now()
        decided: list[Decision] = []
        if result.status != LvlmResult.STATUS_OK:
            # No LVLM answer will come: an SVLM answer that arrived in time is final now.
            decision = self.arbiter.expect_lvlm(stamp, False)
            decided = [decision] if decision else []
            update = None
        else:
            answer = bounded_text(result.answer)
            rois = rois_from_msgs(result.rois)
            outcome = self.state.on_lvlm(
                stamp, answer, rois, arrival, bounded_text(result.question)
            )
            if outcome is ReplacementOutcome.STALE:
                self.get_logger().info(
                    f"LVLM answer for frame {result.frame_seq} arrived "
                    f"{seconds_between(stamp, arrival):.1f} s late (> delta): not used",
                    throttle_duration_sec=10.0,
                )
            if cut := cut_count(result.rois, MAX_ROIS_IN):
                self.rois_cut += cut
                self.get_logger().warning(
                    f"LVLM result for frame {result.frame_seq} holds {len(result.rois)} ROIs: "
                    f"kept the {MAX_ROIS_IN} highest-scoring (is cloud_bridge's max_rois set "
                    "higher, or another node publishing?)",
                    throttle_duration_sec=10.0,
                )
            if rois:  # kept for the overlays, whether or not they go to the SVLM
                self._roi_sets[stamp] = rois
                bound(self._roi_sets, self.config.frames_kept)
            labels = frozenset(result.labels[:MAX_LABELS_IN])
            candidate = Candidate(Source.LVLM, answer, labels, arrival)
            decision = self.arbiter.offer(stamp, candidate)
            decided = [decision] if decision else []
            update = self._context_update()
        self._emit(decided)
        self._arm_deadline()
        if update is not None:
            self._context_pub.publish(update)

    def _on_deadline(self) -> None:
        decided = self.arbiter.due(self._now())
        self._emit(decided)
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        """Point the deadline timer at the oldest pending frame's deadline (or stop it).

        A frame already past its deadline (it reached this node late, or simulated time
        jumped) is decided now: a timer would wait for the clock to move on, which a paused
        /clock never does."""
        while (due := self.arbiter.next_due()) is not None and (now := self._now()) > due:
            self._emit(self.arbiter.due(now))
        if due is None:
            self._deadline_timer.cancel()
            return
        # just after the deadline: due() decides frames strictly past it
        self._deadline_timer.timer_period_ns = max(due - self._now(), 0) + 1_000_000
        self._deadline_timer.reset()

    # --- outputs ------------------------------------------------------------------------

    def _context_update(self) -> ContextUpdate:
        now = self._now()
        self._revision += 1
        config = self.history.config
        update = ContextUpdate(
            revision=self._revision, history_size=config.max_entries, max_delay=config.delta
        )
        update.header.stamp = to_time(now)
        # every turn held: svlm_node rebuilds the history and shows each frame the turns
        # before it, compressed in its own tokens (ContextCompressor.for_frame, as the replay)
        update.history = entries_to_msgs(self.history.turns())
        if self.state.rois is not None:
            update.roi_source_stamp = to_time(self.state.rois[0])
            update.rois = rois_to_msgs(self.state.rois[1])
        return update

    def _emit(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            frame = self._frames.get(decision.stamp)
            # The overlay shows the ROIs behind the final answer: the LVLM's own for this
            # frame, or those the SVLM focused on (from an earlier frame, with their age).
            roi_stamp = self._svlm_rois.pop(decision.stamp, None)
            if decision.source is Source.LVLM:
                roi_stamp = decision.stamp
            rois = self._roi_sets.get(roi_stamp, []) if roi_stamp is not None else []
            self.answers[decision.source.name] += 1
            self._streak.record(self._now(), decision.source is not Source.NONE)
            if decision.source is Source.NONE:
                seq = frame.seq if frame is not None else "?"
                self.get_logger().warning(
                    f"frame {seq}: no valid answer within the deadline "
                    f"({self.config.deadline_s} s; {self.answers['NONE']} such frame(s) so far)",
                    throttle_duration_sec=10.0,
                )
            answer = Answer(
                question=self._asked,
                answer=decision.answer,
                labels=sorted(decision.labels),
                source=int(decision.source),
                deadline_met=decision.deadline_met,
                latency=float(decision.latency),
                deadline=self.config.deadline_s,
            )
            if frame is not None:
                answer.header, answer.frame_seq = frame.header, frame.seq
            else:
                answer.header.stamp = to_time(decision.stamp)
            self._answers.publish(answer)
            self._ledger.answer(decision.stamp)
            if self._detections is not None:  # one per answer: empty when no ROI was behind it
                self._detections.publish(detections_to_msg(answer.header, rois))
            if frame is not None and self._overlay_watched():
                self._overlays.offer((frame, decision, rois, roi_stamp))
        try:
            self._ledger.flush()
        except OSError as exc:
            self.get_logger().warning(
                f"cannot write the frame ledger {self._ledger.path}: {exc}",
                throttle_duration_sec=60.0,
            )

    def _overlay_watched(self) -> bool:
        """Whether to draw: enabled, and someone (RViz, a recorder) subscribes."""
        return self.config.publish_overlay and (
            self._overlay.get_subscription_count() + self._markers.get_subscription_count() > 0
        )

    def _overlay_failed(self, job: OverlayJob, exc: Exception) -> None:
        del job  # a failed overlay never takes the node down: said, and the next one drawn
        self.get_logger().warning(f"overlay failed: {exc!r}", throttle_duration_sec=10.0)

    def _overlay_skipped(self, job: OverlayJob) -> None:
        self.overlays_skipped += 1

    def _publish_overlay(
        self, frame: Frame, decision: Decision, rois: list[Roi], roi_stamp: Stamp | None
    ) -> None:
        from spotvlm_ros.imaging import ImageError
        from spotvlm_ros.overlay import draw_overlay

        try:
            rgb = image_to_rgb(frame.image, 2**31 - 1)
        except ImageError:
            return
        age = seconds_between(roi_stamp, decision.stamp) if roi_stamp is not None else None
        drawn = draw_overlay(rgb, rois, age, decision.answer, decision.source, decision.latency)
        image = rgb_to_image(drawn, "bgr8")
        image.header = frame.header
        self._overlay.publish(image)
        for i, roi in enumerate(rois):
            marker = ImageMarker(
                header=frame.header,
                ns="spotvlm_rois",
                id=i,
                type=ImageMarker.POLYGON,
                action=ImageMarker.ADD,
                scale=2.0,
            )
            marker.outline_color.r, marker.outline_color.g, marker.outline_color.a = 1.0, 0.8, 1.0
            marker.lifetime.sec = 2
            b = roi.box
            marker.points = [
                Point(x=b.x1, y=b.y1),
                Point(x=b.x2, y=b.y1),
                Point(x=b.x2, y=b.y2),
                Point(x=b.x1, y=b.y2),
            ]
            self._markers.publish(marker)

    def _publish_diagnostics(self) -> None:
        now = self._now()
        failing = self._streak.failing_for(now)
        cloud = self.history.lvlm_entry
        age = seconds_between(cloud.stamp, now) if cloud is not None else None
        if failing >= self.warn_after_s:
            level = WARN
            message = (
                f"every answer invalid for {failing:.0f} s: neither model answers in time "
                f"(deadline {self.config.deadline_s} s)"
            )
        elif self._lost_at is not None and seconds_between(self._lost_at, now) < LOST_WARN_S:
            level = WARN
            message = f"{self.lost} frame(s) lost when context_manager restarted"
        else:
            level, message = OK, f"answers by source {self.answers}"
        values = {
            **{f"answers_{k.lower()}": v for k, v in self.answers.items()},
            "pending_frames": self.arbiter.pending(),
            "cloud_context_age_s": age,
            "history_turns": len(self.history.turns()),
            "invalid_for_s": failing,
            "lost_frames": self.lost,
            "overlays_skipped": self.overlays_skipped,
            "rois_cut": self.rois_cut,
        }
        name = self.get_fully_qualified_name()
        self._diagnostics.publish(
            [status("context_manager: answers", name, level, message, values)]
        )

    def close(self) -> None:
        """Decide what is still pending, stop drawing, and log the totals."""
        decided = self.arbiter.due(self._now() + int(self.config.deadline_s * 2e9))
        self._emit(decided)
        self._overlays.close(timeout=5.0)
        if not self.arbiter.pending():
            self._ledger.remove()
        c = self.history.counters
        self.get_logger().info(
            f"answers by source {self.answers}; LVLM answers: {c.replaced} replaced, "
            f"{c.inserted} inserted, {c.stale} stale, {c.duplicate} duplicate, "
            f"{c.superseded} superseded; overlays skipped (superseded before drawn): "
            f"{self.overlays_skipped}; lost at restarts: {self.lost}"
        )


LOST_WARN_S = 60.0  # diagnostics say WARN this long after frames were lost at a restart


def ros_home() -> Path:
    """$ROS_HOME, or ~/.ros as ROS 2 itself defaults."""
    return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros")


def bound(items: OrderedDict[Stamp, Any], size: int) -> None:
    """Forget the oldest entries beyond ``size``."""
    while len(items) > size:
        items.popitem(last=False)


def main(args: list[str] | None = None) -> int:
    """Run context_manager until shutdown."""
    return run_node(ContextManager, args)


if __name__ == "__main__":
    sys.exit(main())
