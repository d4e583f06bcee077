"""svlm_node: the on-board model answers every frame it can start before the deadline.

A managed (lifecycle) node: ``configure`` loads the model, ``activate`` starts answering,
``deactivate`` pauses without unloading (frames are then left to the cloud or the
deadline), ``cleanup`` frees the model's memory. With ``autostart`` (the launch file sets
it) the node configures and activates itself, also after a respawn; ``ros2 lifecycle set
/svlm_node deactivate|cleanup`` pauses or unloads it on a robot.

Inference runs on a latest-slot worker (core.worker), so the executor keeps serving
parameter requests and context updates while the model is busy. Which frame the model
takes and what it gets with it (history, ROIs) is the engine's (core.engine), the same code
the offline replay runs: at most one frame waits, a newer frame replaces it, and every
frame that is not answered is reported (status DROPPED), never queued without bound and
never silently lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Header

from spotvlm_msgs.msg import ContextUpdate, Frame, SvlmResult
from spotvlm_ros.core.baselines import OFFLOADED
from spotvlm_ros.core.compression import ContextCompressor
from spotvlm_ros.core.context import ContextConfig, ContextReplacement, HistoryEntry
from spotvlm_ros.core.engine import SUPERSEDED, InputRules, svlm_inputs, svlm_unsure, too_late
from spotvlm_ros.core.health import FailureStreak, RecentValues, percentile
from spotvlm_ros.core.task import task, task_question
from spotvlm_ros.core.types import NS_PER_S, Roi, Stamp, seconds_between
from spotvlm_ros.core.worker import LatestWorker
from spotvlm_ros.imaging import ImageError
from spotvlm_ros.ros import qos, topics
from spotvlm_ros.ros.convert import (
    MAX_HISTORY_IN,
    MAX_ROIS_IN,
    cut_count,
    entries_to_msgs,
    entry_from_msg,
    image_to_rgb,
    rois_from_msgs,
    stamp_of,
    to_time,
)
from spotvlm_ros.ros.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, status
from spotvlm_ros.ros.params import STARTUP_ONLY, declare, declared, read_once
from spotvlm_ros.ros.spin import run_node
from spotvlm_ros.svlm.hold import HOLD_DIR_VARIABLE, GenerationHold

OFFLOADED_KEPT = 256
"""ADAS: how many offloaded frames' stamps svlm_node remembers (a frame arrives within
moments of its upload notice)."""


@dataclass(frozen=True)
class SvlmNodeConfig:
    """svlm_node's parameters (those not passed through to the backend)."""

    task: str
    task_vocabulary: str
    question: str
    deadline_s: float
    use_context: bool
    ggvr: bool
    gtvr: bool
    roi_max_age_s: float
    history_form: str
    max_input_pixels: int
    context_budget_tokens: int
    laecips_threshold: float = 0.0
    skip_offloaded: bool = False


class SvlmNode(LifecycleNode):
    """Runs the SVLM backend on the frames, as a managed node."""

    def __init__(self) -> None:
        super().__init__("svlm_node")
        self._read_parameters(self.declare_and_read)
        self._context_lock = threading.Lock()
        self._latest_context: ReceivedContext | None = None
        self._offloaded: OrderedDict[Stamp, None] = OrderedDict()  # ADAS: the cloud's frames
        self._active = False
        self.backend: Any = None
        self.compressor: Any = None  # made with the backend's tokenizer at configure
        self.question = ""  # the task's question (or the parameter's), set at configure
        self.rules = InputRules()
        self._worker: LatestWorker[Frame] | None = None
        self._publisher: Any = None
        # not `_subscriptions`: that is rclpy Node's own list of every subscription; sharing
        # its name made cleanup destroy only every other one (an orphaned context
        # subscription then kept the executor spinning at 100 % after cleanup/configure)
        self._inputs: list[Any] = []
        self._hold = GenerationHold.from_environment()
        self.counts = {
            "answered": 0,
            "dropped": 0,
            "errors": 0,
            "ignored_inactive": 0,
            "bad_context": 0,
            "offloaded": 0,
            "cloud_requested": 0,
        }
        self.error_after_s = declare(self, "svlm_node", "error_after_s")
        self._streak = FailureStreak()
        self._inference = RecentValues(30.0)  # answered frames' inference time [s]
        self._queue = RecentValues(30.0)  # and their wait before inference [s]
        self._failed = RecentValues(30.0)  # frames dropped or failed (1 each)
        self._last_failure = ""
        self._diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0, self._publish_diagnostics)
        autostart = declare(self, "svlm_node", "autostart")
        if autostart:
            self._started_ns = self.get_clock().now().nanoseconds
            self._autostart_timer = self.create_timer(0.1, self._autostart)
        else:
            self.get_logger().info(
                "svlm_node is unconfigured: `ros2 lifecycle set /svlm_node configure` loads "
                "the model, `activate` starts answering"
            )

    def guard_parameters(self) -> None:
        """The model's and the prompt's parameters are read at each configure: set while
        configured, they are accepted and said to apply at the next configure; the two read
        at start-up only are refused."""
        startup = ("autostart", "error_after_s")
        read_once(self, startup, refuse=True, applies=STARTUP_ONLY)
        read_once(
            self,
            [n for n in declared(self) if n not in startup],
            refuse=False,
            applies="takes effect at the next configure (ros2 lifecycle set /svlm_node "
            "deactivate, cleanup, configure, activate)",
            active=lambda: self.backend is not None,
        )

    def _autostart(self) -> None:
        """configure, then activate (once, right after the executor starts spinning).

        First, for up to AUTOSTART_WAIT_S, until someone listens to this node's transition
        events: the launch file starts the bag on the "active" event, which is volatile and
        would be lost to a listener that has not matched yet.
        """
        events = f"{self.get_fully_qualified_name()}/transition_event"
        waited = seconds_between(self._started_ns, self.get_clock().now().nanoseconds)
        if self.count_subscribers(events) == 0 and waited < AUTOSTART_WAIT_S:
            return
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _read_parameters(self, d: Any) -> None:
        """Read the parameters into the configs; ``d(name)`` declares them at start-up and
        re-reads them at each ``configure``."""
        from spotvlm_ros.svlm.qwen import MODEL_PARAMETER

        model = d(MODEL_PARAMETER)
        backend_config_args = dict(  # noqa: C408 - keyword names mirror QwenSvlmConfig
            model=model,
            device=d("device"),
            dtype=d("dtype"),
            min_pixels=d("min_pixels"),
            max_pixels=d("max_pixels"),
            max_new_tokens=d("max_new_tokens"),
            min_focus_tokens=d("min_focus_tokens"),
            focus_stage=d("focus_stage"),
            focus_margin_tokens=d("focus_margin_tokens"),
            encoder_scope=d("encoder_scope"),
            gtvr_mu=d("gtvr_mu"),
            gtvr_b=d("gtvr_b"),
            gtvr_alpha=d("gtvr_alpha"),
            feature_cache_frames=d("feature_cache_frames"),
        )
        self.config = SvlmNodeConfig(
            task=d("task"),
            task_vocabulary=d("task_vocabulary"),
            question=d("question"),
            deadline_s=d("deadline_s"),
            use_context=d("use_context"),
            ggvr=d("ggvr"),
            gtvr=d("gtvr"),
            roi_max_age_s=d("roi_max_age_s"),
            history_form=d("history_form"),
            max_input_pixels=d("max_input_pixels"),
            context_budget_tokens=d("context_budget_tokens"),
            laecips_threshold=d("laecips_threshold"),
            skip_offloaded=d("skip_offloaded"),
        )
        threads = d("torch_threads")
        self.torch_threads = int(threads) or cpu_threads_for_model()
        self._backend_config_args = backend_config_args
        self._model = str(model)

    # --- lifecycle ----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, create the topics and start the worker."""
        import torch

        from spotvlm_ros.svlm.qwen import MODEL_PARAMETER, QwenSvlm, QwenSvlmConfig, SvlmError

        self._read_parameters(lambda name: self.get_parameter(name).value)
        model = self._model
        try:
            torch.set_num_threads(self.torch_threads)
            self.task = task(self.config.task)
            self.vocabulary = self.task.vocabulary(self.config.task_vocabulary)
            self.question = task_question(
                self.config.task, self.config.task_vocabulary, self.config.question
            )
            self.rules = InputRules(
                ggvr=self.config.ggvr,
                gtvr=self.config.gtvr,
                roi_max_age_s=self.config.roi_max_age_s,
                history_form=self.config.history_form,
                use_history=self.config.use_context,
            )
            with self._loading_diagnostics(model):
                self.backend = QwenSvlm.load(QwenSvlmConfig(**self._backend_config_args))
                for note in self.backend.notes:
                    self.get_logger().info(note)
                warm_up_s = self._warm_up()
        except (SvlmError, ValueError) as exc:
            self.backend = None
            self.get_logger().fatal(f"svlm_node cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # rclpy would swallow it without a word: say what it was
            self.backend = None
            self.get_logger().fatal(f"svlm_node cannot configure: unexpected {exc!r}")
            return TransitionCallbackReturn.FAILURE
        self.compressor = ContextCompressor(
            self.config.context_budget_tokens,
            count_tokens=self.backend.count_tokens,
            template=self.task.template,
        )
        self.model_name = model + (
            " (RANDOM TEST MODEL: meaningless answers)" if self.backend.is_test_model else ""
        )
        if self.backend.is_test_model:
            self.get_logger().warning(
                f"{model} is a randomly initialised TEST model: every answer is meaningless. "
                f"Set the parameter `{MODEL_PARAMETER}` to a Qwen2.5-VL folder for real answers."
            )
        if self._hold is not None:
            self._hold.closing.clear()
            self._hold.clear()
            self.get_logger().warning(
                f"{HOLD_DIR_VARIABLE} is set: every frame's decoding waits at a test gate in "
                f"{self._hold.folder} (unset it outside tests)"
            )
        self._publisher = self.create_lifecycle_publisher(
            SvlmResult, topics.SVLM_RESULT, qos.RESULTS
        )
        # the context first: when an update and a frame are ready together, the executor takes
        # them in this order, and the frame is answered with the newest context
        self._inputs = [
            self.create_subscription(ContextUpdate, topics.CONTEXT, self._on_context, qos.LATCHED),
            self.create_subscription(Frame, topics.FRAME, self._on_frame, qos.RESULTS),
        ]
        if self.config.skip_offloaded:  # ADAS: the frames cloud_bridge sent are the cloud's
            self._inputs.append(
                self.create_subscription(Header, topics.UPLOADS, self._on_upload, qos.RESULTS)
            )
        self._worker = LatestWorker(
            "svlm_worker",
            self._process,
            on_superseded=lambda frame: self._publish_dropped(frame, SUPERSEDED),
            on_error=self._on_worker_error,
        )
        self.get_logger().info(
            f"SVLM {model} loaded on {self.backend.device}; "
            f"GGVR {self._focus_description()}, "
            f"GTVR {'on' if self.config.gtvr else 'off'}, "
            f"deadline {self.config.deadline_s} s; {self.torch_threads} torch CPU thread(s); "
            f"warm-up answer in {warm_up_s:.2f} s"
        )
        return TransitionCallbackReturn.SUCCESS

    def _focus_description(self) -> str:
        """Where visual focus acts, for the log: 'off', 'on (LM-side)' or the encoder's scope."""
        if not self.config.ggvr:
            return "off"
        backend = self.backend.config
        if backend.focus_stage != "encoder":
            return "on (LM-side)"
        return (
            f"on (encoder-side: encoder_scope {backend.encoder_scope}, margin "
            f"{backend.focus_margin_tokens} token(s))"
        )

    @contextlib.contextmanager
    def _loading_diagnostics(self, model: str) -> Iterator[None]:
        """Keep /diagnostics saying what this node is doing while it loads the model.

        The load runs in the configure transition, on the executor's one thread (a lifecycle
        transition returns its outcome), so the 1 Hz diagnostics timer waits behind it: a
        real checkpoint takes tens of seconds, and a monitor would see the node go silent.
        A side thread publishes the status instead until the load is over.
        """
        done = threading.Event()
        start = time.monotonic()
        name = self.get_fully_qualified_name()

        def beat() -> None:
            while not done.is_set() and self.context.ok():
                elapsed = time.monotonic() - start
                message = f"not answering yet: loading {model} ({elapsed:.0f} s)"
                values = {"state": "configuring", "loading_for_s": elapsed}
                item = status("svlm_node: inference", name, WARN, message, values)
                self._diagnostics.publish([item])
                done.wait(1.0)

        thread = threading.Thread(target=beat, name="svlm_loading_diagnostics", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _warm_up(self) -> float:
        """Answer one blank frame, so that the first real frame does not pay for torch's
        lazy set-up (seen as several deadline misses right after activation)."""
        import numpy as np

        blank = np.zeros((360, 640, 3), np.uint8)
        return float(self.backend.infer(blank, self.question, max_new_tokens=2).latency)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start answering frames."""
        self._active = True
        self.get_logger().info("active: answering frames")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Pause: frames are no longer answered (the model stays loaded)."""
        self._active = False
        pending = self._worker.clear() if self._worker is not None else None
        if pending is not None:
            self.counts["ignored_inactive"] += 1
        self.get_logger().info(
            "inactive: frames are left to the cloud or the deadline (model still loaded)"
        )
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker, drop the topics and free the model's memory."""
        self._unload()
        self.get_logger().info("cleaned up: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload whatever is loaded."""
        self._active = False
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def _unload(self) -> None:
        self._stop_worker()
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._publisher is not None:
            self.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None
        self.backend = None
        self.compressor = None  # it holds the tokenizer (and so the backend) through count_tokens
        self._latest_context = None
        release_memory()

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        if self._hold is not None:  # a frame held at the test gate must not block the stop
            self._hold.closing.set()
        self._worker.close(timeout=30.0)
        self._worker = None

    def declare_and_read(self, name: str) -> object:
        """Declare one parameter (as spotvlm_ros.parameters describes it); return its value."""
        return declare(self, "svlm_node", name)

    # --- callbacks (executor threads) ---------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if not self._active:
            self.counts["ignored_inactive"] += 1
            self.get_logger().info(
                f"frame {frame.seq} not answered: svlm_node is inactive",
                throttle_duration_sec=10.0,
            )
            return
        if self._was_offloaded(frame):
            return
        worker = self._worker
        if worker is not None:
            worker.offer(frame)

    def _on_upload(self, header: Header) -> None:
        """ADAS (skip_offloaded): cloud_bridge sent the frame at this stamp to the cloud; a
        waiting frame of that stamp is left to it (one already started is answered)."""
        stamp = stamp_of(header.stamp)
        with self._context_lock:
            self._offloaded[stamp] = None
            while len(self._offloaded) > OFFLOADED_KEPT:
                self._offloaded.popitem(last=False)
        worker = self._worker
        if worker is not None:
            frame = worker.withdraw(lambda f: stamp_of(f.header.stamp) == stamp)
            if frame is not None:
                self._publish_offloaded(frame)

    def _was_offloaded(self, frame: Frame) -> bool:
        """ADAS: whether the frame is the cloud's (then it is answered as dropped here)."""
        if not self.config.skip_offloaded:
            return False
        with self._context_lock:
            offloaded = stamp_of(frame.header.stamp) in self._offloaded
        if offloaded:
            self._publish_offloaded(frame)
        return offloaded

    def _publish_offloaded(self, frame: Frame) -> None:
        self._publish_dropped(frame, OFFLOADED, counted_as="offloaded")

    def _on_context(self, update: ContextUpdate) -> None:
        """Convert (and bound) the context once, as it arrives: a bad update from any
        publisher is refused here, with the previous context kept, instead of failing every
        frame while it stays latched."""
        try:
            context = ReceivedContext.from_msg(update)
        except ValueError as exc:
            self.counts["bad_context"] += 1
            self.get_logger().warning(
                f"context update refused ({exc}); the previous one stays in use",
                throttle_duration_sec=10.0,
            )
            return
        if context.dropped:
            self.get_logger().warning(
                f"context update: {context.dropped}", throttle_duration_sec=10.0
            )
        with self._context_lock:
            self._latest_context = context

    def close(self) -> None:
        """Stop the worker (it finishes the frame in progress) and log the totals."""
        self._stop_worker()
        self.get_logger().info(f"SVLM results: {self.counts}")

    # --- worker -------------------------------------------------------------------------

    def _on_worker_error(self, frame: Frame, exc: Exception) -> None:
        self.counts["errors"] += 1
        self.get_logger().error(f"SVLM failed on frame {frame.seq}: {exc!r}")
        self._publish(self._result(frame, SvlmResult.STATUS_ERROR, error=repr(exc)))

    def _process(self, frame: Frame) -> None:
        from spotvlm_ros.svlm.qwen import SvlmError

        with self._context_lock:
            context = self._latest_context
        if self._was_offloaded(frame):
            return
        stamp = stamp_of(frame.header.stamp)
        started = self.get_clock().now().nanoseconds
        why = too_late(stamp, started, self.config.deadline_s)
        if why is not None:
            self._publish_dropped(frame, why)
            return
        try:
            rgb = image_to_rgb(frame.image, self.config.max_input_pixels)
        except ImageError as exc:
            self.counts["errors"] += 1
            self.get_logger().warning(f"frame {frame.seq}: {exc}", throttle_duration_sec=5.0)
            self._publish(self._result(frame, SvlmResult.STATUS_ERROR, error=str(exc)))
            return
        history = ContextReplacement()
        rois = None
        if context is not None:
            history = ContextReplacement.from_turns(context.config, context.entries)
            rois = (context.roi_stamp, context.rois)
        inputs = svlm_inputs(stamp, history, rois, self.compressor, self.rules)
        try:
            out = self.backend.infer_frame(
                rgb,
                self.question,
                stamp,
                inputs,
                on_token=self._hold.for_frame(frame.seq) if self._hold is not None else None,
            )
        except SvlmError as exc:
            self.counts["errors"] += 1
            self._publish(self._result(frame, SvlmResult.STATUS_ERROR, error=str(exc)))
            return
        result = self._result(frame, SvlmResult.STATUS_OK)
        result.answer = out.answer
        result.labels = sorted(self.task.parse(self.vocabulary, out.answer))
        result.inference_latency = out.latency
        result.queue_delay = max(0.0, (started - stamp_of(frame.ingest_time)) / NS_PER_S)
        result.visual_tokens_used = out.visual_tokens_used
        result.visual_tokens_full = out.visual_tokens_full
        result.history_used = entries_to_msgs(inputs.entries)
        result.context_text = inputs.context_text
        result.roi_used = out.ggvr_applied or out.gtvr_applied
        if inputs.roi_stamp is not None:
            result.roi_source_stamp = to_time(inputs.roi_stamp)
        result.ggvr_applied = out.ggvr_applied
        result.gtvr_applied = out.gtvr_applied
        result.focus_note = out.focus_note
        result.focus_stage = out.focus_stage
        result.encoder_patches = out.encoder_patches
        result.encoder_patches_full = out.encoder_patches_full
        result.confidence = float(out.confidence)
        result.cloud_requested = svlm_unsure(out.confidence, self.config.laecips_threshold)
        if result.cloud_requested:
            self.counts["cloud_requested"] += 1
        self.counts["answered"] += 1
        self._publish(result)

    def _result(self, frame: Frame, status: int, error: str = "") -> SvlmResult:
        result = SvlmResult(header=frame.header, frame_seq=frame.seq, question=self.question)
        result.model, result.status, result.error = self.model_name, status, error
        return result

    def _publish_dropped(self, frame: Frame, why: str, counted_as: str = "dropped") -> None:
        self.counts[counted_as] += 1
        if counted_as == "dropped":
            self.get_logger().warning(
                f"dropped frame {frame.seq}: {why}", throttle_duration_sec=5.0
            )
        self._publish(self._result(frame, SvlmResult.STATUS_DROPPED, error=why))

    def _publish(self, result: SvlmResult) -> None:
        publisher = self._publisher
        if publisher is None or not self.context.ok():  # unloaded or shutting down
            return
        if not self._active:  # deactivated while this frame was in progress: no answer
            self.counts["ignored_inactive"] += 1
            return
        now = self.get_clock().now().nanoseconds
        ok = result.status == SvlmResult.STATUS_OK
        self._streak.record(now, ok)
        if ok:
            self._inference.add(now, result.inference_latency)
            self._queue.add(now, result.queue_delay)
        else:
            self._last_failure = result.error
            self._failed.add(now, 1.0)
        publisher.publish(result)

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now().nanoseconds
        state = self._state_machine.current_state[1]
        failing = self._streak.failing_for(now)
        times, waits = self._inference.values(now), self._queue.values(now)
        p95 = percentile(times, 0.95) if times else None
        if not self._active:
            level, message = WARN, f"not answering: {state} (ros2 lifecycle set /svlm_node ...)"
        elif failing >= self.error_after_s:
            level = ERROR
            message = f"every frame dropped or failed for {failing:.0f} s: {self._last_failure}"
        elif (failed := len(self._failed.values(now))) > len(times):
            level = WARN
            message = (
                f"most frames dropped or failed: {failed} in {self._failed.window_s:.0f} s "
                f"against {len(times)} answered (last: {self._last_failure})"
            )
        else:
            level = OK
            message = f"answering, p95 inference {p95:.2f} s" if p95 is not None else "answering"
        values = {
            "state": state,
            "answered_rate_hz": len(times) / self._inference.window_s,
            "inference_p50_s": percentile(times, 0.5) if times else None,
            "inference_p95_s": p95,
            "queue_delay_p95_s": percentile(waits, 0.95) if waits else None,
            "failing_for_s": failing,
            "last_failure": self._last_failure,
            **self.counts,
        }
        name = self.get_fully_qualified_name()
        self._diagnostics.publish([status("svlm_node: inference", name, level, message, values)])


@dataclass(frozen=True)
class ReceivedContext:
    """A ContextUpdate as svlm_node uses it: checked, converted and bounded on arrival."""

    config: ContextConfig
    entries: tuple[HistoryEntry, ...]
    rois: tuple[Roi, ...]
    roi_stamp: int
    dropped: str  # what was left out, for the log ("" when nothing)

    @classmethod
    def from_msg(cls, update: ContextUpdate) -> ReceivedContext:
        """Raises ValueError for an update that cannot be used at all."""
        config = ContextConfig(
            min(max(1, update.history_size), MAX_HISTORY_IN), float(update.max_delay)
        )
        entries, unknown = [], 0
        for msg in update.history[-MAX_HISTORY_IN:]:
            try:
                entries.append(entry_from_msg(msg))
            except ValueError:  # an unknown source
                unknown += 1
        rois = rois_from_msgs(update.rois)
        notes = []
        if unknown:
            notes.append(f"{unknown} history entr(ies) of unknown source left out")
        if cut := cut_count(update.history, MAX_HISTORY_IN):
            notes.append(f"{cut} history entries beyond {MAX_HISTORY_IN} left out")
        if cut := cut_count(update.rois, MAX_ROIS_IN):
            notes.append(f"{cut} ROIs beyond {MAX_ROIS_IN} left out (the highest-scoring kept)")
        return cls(
            config, tuple(entries), tuple(rois), stamp_of(update.roi_source_stamp), "; ".join(notes)
        )


AUTOSTART_WAIT_S = 5.0
"""How long autostart waits for a listener of the transition events (see _autostart)."""


def release_memory() -> None:
    """Give the freed model's memory back to the system: collect the cycles that still hold
    tensors, then have glibc return its free heap pages (without it RSS stays high)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: reused, not returned
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu_threads_for_model() -> int:
    """One fewer than the cores this process may run on, at least 1.

    torch's default (every core) makes the model's thread pool fight the graph's other
    processes for the same cores; on a loaded 2-core machine the tiny test model's 0.15 s
    inference was seen to take 1.5 s that way.
    """
    return max(1, len(os.sched_getaffinity(0)) - 1)


def main(args: list[str] | None = None) -> int:
    """Run svlm_node until shutdown."""
    return run_node(SvlmNode, args)


if __name__ == "__main__":
    sys.exit(main())
