"""evaluator: scores the live graph against a ground-truth topic (e.g. from a replayed bag).

Matches /spotvlm/answer, /spotvlm/svlm_result and /spotvlm/lvlm_result with
/spotvlm/ground_truth by stamp and keeps running Micro-F1 / Macro-F1 / exact match per
source, deadline misses, context replacements and visual tokens (core.evaluation, the
same bookkeeping as the offline evaluator). Writes report.json and report.md to
``report_dir`` every few seconds and on shutdown.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import Image

from spotvlm_msgs.msg import Answer, GroundTruth, HistoryEntry, LvlmResult, SvlmResult
from spotvlm_ros.core.evaluation import EvaluationLog
from spotvlm_ros.core.task import task
from spotvlm_ros.core.types import Source
from spotvlm_ros.exit_codes import EXIT_NOTHING_SCORED
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import MAX_LABELS_IN, stamp_of
from spotvlm_ros.ros.params import declare
from spotvlm_ros.ros.spin import StartupError, run_node


class Evaluator(Node):
    """Live evaluation of the graph's answers."""

    def __init__(self) -> None:
        super().__init__("evaluator")
        self.exit_code = 0  # EXIT_NOTHING_SCORED when nothing was scored (see close)
        task_name = declare(self, "evaluator", "task")
        name = declare(self, "evaluator", "task_vocabulary")
        report_dir = declare(self, "evaluator", "report_dir")
        self.note = declare(self, "evaluator", "report_note")
        overlay_dir = declare(self, "evaluator", "overlay_dir")
        try:
            self.task = task(task_name)
            self.vocabulary = self.task.vocabulary(name)
        except ValueError as exc:
            raise StartupError(f"evaluator: {exc}") from exc
        self.report_dir = Path(report_dir) if report_dir else None
        self.log = EvaluationLog(self.vocabulary.labels, self.task.correct)
        self.truths_mismatched = 0  # ground truths of another task or vocabulary
        self._lock = threading.Lock()
        self.create_subscription(GroundTruth, topics.GROUND_TRUTH, self._on_truth, qos.RESULTS)
        self.create_subscription(Answer, topics.ANSWER, self._on_answer, qos.ANSWERS)
        self.create_subscription(SvlmResult, topics.SVLM_RESULT, self._on_svlm, qos.RESULTS)
        self.create_subscription(LvlmResult, topics.LVLM_RESULT, self._on_lvlm, qos.RESULTS)
        if self.report_dir is not None:
            self.create_timer(5.0, self.write_report)
        self.overlay_dir = Path(overlay_dir) if overlay_dir else None
        self.overlays_saved = 0
        if self.overlay_dir is not None:
            self.overlay_dir.mkdir(parents=True, exist_ok=True)
            self.create_subscription(Image, topics.OVERLAY, self._on_overlay, qos.RESULTS)

    def _on_overlay(self, msg: Image) -> None:
        import cv2

        from spotvlm_ros.imaging import ImageError, swap_red_blue
        from spotvlm_ros.ros.convert import image_to_rgb

        try:
            rgb = image_to_rgb(msg, 2**31 - 1)
        except ImageError as exc:
            self.get_logger().warning(f"unusable overlay: {exc}", throttle_duration_sec=10.0)
            return
        name = f"{stamp_of(msg.header.stamp)}.png"
        cv2.imwrite(str(self.overlay_dir / name), swap_red_blue(rgb))  # type: ignore[operator]
        self.overlays_saved += 1

    def _on_truth(self, msg: GroundTruth) -> None:
        labels = list(msg.labels[:MAX_LABELS_IN])
        truth = self.vocabulary.normalize_all(labels)
        outside = sorted(label for label in labels if not self.vocabulary.normalize(label))
        if outside or (msg.task and msg.task != self.task.name):
            # scored anyway (as an empty or partial truth), but never silently
            self.truths_mismatched += 1
            self.get_logger().warning(
                f"ground truth of task {msg.task!r} with labels {outside} outside the "
                f"{self.task.name} task's {self.vocabulary.name} vocabulary: the bag was made "
                f"for another task or vocabulary (set task:= and vocabulary:= to match it); "
                f"{self.truths_mismatched} such frame(s) so far",
                throttle_duration_sec=10.0,
            )
        with self._lock:
            self.log.truth(stamp_of(msg.header.stamp), truth)

    def _on_answer(self, msg: Answer) -> None:
        with self._lock:
            self.log.final(
                stamp_of(msg.header.stamp),
                Source(msg.source),
                self.vocabulary.normalize_all(msg.labels[:MAX_LABELS_IN]),
                msg.latency,
            )

    def _on_svlm(self, msg: SvlmResult) -> None:
        lvlm_turns = [
            stamp_of(h.stamp) for h in msg.history_used if h.source == HistoryEntry.SOURCE_LVLM
        ]
        ok = msg.status == SvlmResult.STATUS_OK
        with self._lock:
            self.log.svlm(
                stamp_of(msg.header.stamp),
                self.vocabulary.normalize_all(msg.labels[:MAX_LABELS_IN]) if ok else None,
                tokens_used=msg.visual_tokens_used,
                tokens_full=msg.visual_tokens_full,
                dropped=msg.status == SvlmResult.STATUS_DROPPED,
                lvlm_history=lvlm_turns,
            )

    def _on_lvlm(self, msg: LvlmResult) -> None:
        ok = msg.status == LvlmResult.STATUS_OK
        with self._lock:
            self.log.lvlm(
                stamp_of(msg.header.stamp),
                self.vocabulary.normalize_all(msg.labels[:MAX_LABELS_IN]) if ok else None,
            )

    def write_report(self) -> None:
        """Write report.json and report.md (if report_dir is set)."""
        if self.report_dir is None:
            return
        self.report_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            text_json, text_md = self.log.json(), self.log.markdown(note=self.note)
        (self.report_dir / "report.json").write_text(text_json + "\n")
        (self.report_dir / "report.md").write_text(text_md)

    def close(self) -> None:
        """Write the final report."""
        self.write_report()
        with self._lock:
            report = self.log.report()
        final = report["scores"]["final"]
        score = (
            f"final Micro-F1 {final['micro_f1']:.3f}"
            if self.task.name == "objects"
            else f"final accuracy {final['accuracy']:.3f} ({self.task.name})"
        )
        self.get_logger().info(
            f"{report['final_answers']} answers, {report['deadline_misses']} deadline misses, "
            + score
            + (f"; report in {self.report_dir}" if self.report_dir else "")
        )
        if self.truths_mismatched:
            self.get_logger().warning(
                f"{self.truths_mismatched} frame(s) had ground truth outside the "
                f"{self.vocabulary.name} vocabulary: their scores mean little"
            )
        if report["frames_with_truth"] == 0 or report["final_answers"] == 0:
            # an empty report must not pass for a result
            self.exit_code = EXIT_NOTHING_SCORED
            self.get_logger().error(
                f"no frame was scored ({report['final_answers']} answers, "
                f"{report['frames_with_truth']} frames with ground truth): is the camera topic "
                "right (camera_ingest warns which image topics it sees), and does the bag carry "
                "spotvlm/ground_truth?"
            )


def main(args: list[str] | None = None) -> int:
    """Run the evaluator until shutdown."""
    return run_node(Evaluator, args)


if __name__ == "__main__":
    sys.exit(main())
