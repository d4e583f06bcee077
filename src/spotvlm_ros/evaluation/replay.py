"""Deterministic replay of a labelled sequence in virtual time, driving the same engine
objects as the live graph (core.engine, core.arbiter): which frame the SVLM takes (the
newest wins; a superseded frame is dropped, as is one it cannot start within the
deadline), the history and ROIs it gets (the ROIs only of LVLM answers that entered the
history, no older than ``roi_max_age_s``), the upload policy with every request's end fed
back, and arbitration at the deadline.

It is a discrete-event simulation of the graph: frames arrive at their stamps, the SVLM
takes a fixed (or its measured) compute time per frame, uploaded frames' LVLM answers
arrive after the modelled cloud latency. What differs from the live graph is only the
clock and the transport (no DDS delay between the nodes).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spotvlm_ros.core.arbiter import Arbiter, Candidate, Decision, LiveArbiter
from spotvlm_ros.core.baselines import (
    ADAS_PROBE_S,
    LAECIPS_THRESHOLD,
    OFFLOADED,
    DistributedVlmConfig,
)
from spotvlm_ros.core.compression import ContextCompressor, CountTokens, count_words
from spotvlm_ros.core.context import ContextConfig
from spotvlm_ros.core.engine import (
    SUPERSEDED,
    ContextState,
    FrameSlot,
    InputRules,
    RequestEnd,
    SvlmInputs,
    UploadRule,
    Uploads,
    svlm_inputs,
    svlm_unsure,
    too_late,
)
from spotvlm_ros.core.evaluation import Correct, EvaluationLog, same_set
from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.task import DEFAULT_DEADLINE_S, DEFAULT_TASK, task
from spotvlm_ros.core.types import Roi, Source, Stamp, seconds_between, stamp_from_seconds
from spotvlm_ros.core.vocab import Vocabulary
from spotvlm_ros.parameters import CONTEXT_BUDGET_TOKENS, PRESETS, Preset

Method = Preset
"""Which parts of SpotVLM a replayed method uses: one of the presets the live graph runs."""

METHODS: dict[str, Preset] = PRESETS
"""edge-only, cloud-only, and SpotVLM with its ablations (spotvlm = CRM + GGVR + GTVR)."""


@dataclass(frozen=True)
class SvlmAnswer:
    """What the SVLM said about a frame and what it cost."""

    answer: str
    seconds: float
    tokens_used: int
    tokens_full: int
    confidence: float = 1.0  # the answer's probability per token (LAECIPS's gate)


@dataclass(frozen=True)
class LvlmAnswer:
    """What the LVLM said about a frame."""

    answer: str
    labels: frozenset[str]
    rois: tuple[Roi, ...]
    error: str = ""  # the request failed (the LVLM gave no answer): why
    end: RequestEnd = RequestEnd.ANSWERED  # how it ended, as the upload policy sees it


class SvlmLike(Protocol):
    """The SVLM as the replay uses it."""

    def answer(
        self, name: str, image: np.ndarray, stamp: Stamp, question: str, inputs: SvlmInputs
    ) -> SvlmAnswer:
        """Answer about one frame, with the history and ROIs the engine chose for it."""

    def reset(self) -> None:
        """Forget every past frame (called before each run)."""


class LvlmLike(Protocol):
    """The LVLM as the replay uses it."""

    def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
        """Answer about one frame."""


@dataclass(frozen=True)
class Frame:
    """A frame of the replayed sequence."""

    name: str
    stamp: Stamp
    image: Callable[[], np.ndarray]
    truth: frozenset[str]


@dataclass(frozen=True)
class ReplayConfig:
    """Parameters of a replay (the live graph's defaults)."""

    deadline: float = DEFAULT_DEADLINE_S
    svlm_seconds: float | None = 0.3  # None: use the measured compute time
    context: ContextConfig = field(default_factory=ContextConfig)
    context_budget: int = CONTEXT_BUDGET_TOKENS  # in count_tokens units (the SVLM's tokens)
    count_tokens: CountTokens = count_words
    upload: UploadPolicyConfig = field(default_factory=UploadPolicyConfig)
    task: str = DEFAULT_TASK  # objects, gesture, caption (spotvlm_ros.core.task)
    question: str = ""  # '' = the task's own
    roi_max_age_s: float = InputRules().roi_max_age_s
    history_form: str = InputRules().history_form
    # the baselines' own settings (core.baselines; docs/evaluation.md states each)
    distributed: DistributedVlmConfig = field(default_factory=DistributedVlmConfig)
    adas_probe_s: float = ADAS_PROBE_S
    laecips_threshold: float = LAECIPS_THRESHOLD


@dataclass
class Event:
    """One thing that happened, in the order the live graph would publish it."""

    kind: str  # truth, svlm, lvlm, final
    stamp: Stamp
    labels: frozenset[str] | None = None
    source: Source = Source.NONE
    latency: float = 0.0
    tokens_used: int = 0
    tokens_full: int = 0
    dropped: bool = False
    lvlm_history: tuple[Stamp, ...] = ()
    context: str = ""  # svlm: the context text the SVLM was given
    roi_stamp: Stamp | None = None  # svlm: the frame of the ROIs it focused on
    why: str = ""  # svlm: why it was dropped
    time: Stamp = 0  # when it happened (virtual time)


# At equal times: LVLM answers arrive first, then the SVLM finishes, then frames arrive,
# then deadlines pass (an answer exactly at its deadline is in time).
_LVLM, _SVLM_DONE, _ENCODED, _FRAME, _DEADLINE = range(5)


def replay(
    frames: Sequence[Frame],
    method: Method,
    cloud_latency: Callable[[int], float],
    svlm: SvlmLike | None,
    lvlm: LvlmLike | None,
    vocab: Vocabulary,
    config: ReplayConfig | None = None,
) -> tuple[EvaluationLog, list[Event]]:
    """Run ``method`` over ``frames``; ``cloud_latency(i)`` is frame i's round trip (s)."""
    cfg = config or ReplayConfig()
    run = _Run(frames, method, cloud_latency, svlm, lvlm, vocab, cfg)
    run.run()
    return apply(run.events, vocab, task(cfg.task).correct), run.events


class _Run:
    """One replay: the graph's three nodes' engine objects, driven by a clock of events."""

    def __init__(
        self,
        frames: Sequence[Frame],
        method: Method,
        cloud_latency: Callable[[int], float],
        svlm: SvlmLike | None,
        lvlm: LvlmLike | None,
        vocab: Vocabulary,
        cfg: ReplayConfig,
    ) -> None:
        self.frames, self.method, self.cloud_latency = frames, method, cloud_latency
        self.svlm = svlm if method.svlm else None
        self.lvlm = lvlm if method.lvlm else None
        self.vocab, self.cfg = vocab, cfg
        self.task = task(cfg.task)
        self.question = cfg.question or self.task.question(vocab)
        upload = cfg.upload
        if method.lvlm and not method.svlm:  # cloud-only: every frame goes to the cloud
            upload = UploadPolicyConfig(mode=UploadMode.EVERY_FRAME, max_in_flight=1024)
        # context_manager's
        self.context = ContextState(cfg.context)
        self.arbiter = LiveArbiter(Arbiter(cfg.deadline), max_pending=1 << 30)
        # cloud_bridge's (a baseline's rule, or the upload policy)
        rule = {"adas": UploadRule.ADAS, "laecips": UploadRule.LAECIPS}.get(
            method.baseline, UploadRule.POLICY
        )
        self.uploads = Uploads(UploadPolicy(upload), rule, cfg.deadline)
        self.uploads.offload.probe_s = cfg.adas_probe_s
        # svlm_node's
        self.slot: FrameSlot[int] = FrameSlot()
        self.busy = False
        self.compressor = ContextCompressor(
            cfg.context_budget, count_tokens=cfg.count_tokens, template=self.task.template
        )
        self.rules = InputRules(
            ggvr=method.ggvr,
            gtvr=method.gtvr,
            roi_max_age_s=cfg.roi_max_age_s,
            history_form=cfg.history_form,
            use_history=method.crm,
        )
        # Distributed VLM's (core.baselines)
        self.encoder: FrameSlot[int] = FrameSlot()  # Distributed VLM's edge encoder
        self.encoding = False
        self.events: list[Event] = []
        self._queue: list[tuple[Stamp, int, int, Any]] = []
        self._order = itertools.count()

    def at(self, time: Stamp, kind: int, payload: Any) -> None:
        heapq.heappush(self._queue, (time, kind, next(self._order), payload))

    def run(self) -> None:
        if self.svlm is not None:
            self.svlm.reset()
        for i, frame in enumerate(self.frames):
            self.at(frame.stamp, _FRAME, i)
        while self._queue:
            now, kind, _, payload = heapq.heappop(self._queue)
            if kind == _FRAME:
                self.on_frame(payload, now)
            elif kind == _SVLM_DONE:
                i, out, inputs = payload
                self.on_svlm_done(i, out, inputs, now)
            elif kind == _LVLM:
                i, answer, sent = payload
                self.on_lvlm(i, answer, sent, now)
            elif kind == _ENCODED:
                self.on_encoded(payload, now)
            self.decided(self.arbiter.due(now), now)
        self.decided(self.arbiter.due(2**62), 2**62)

    # --- camera_ingest and cloud_bridge ----------------------------------------------

    def on_frame(self, i: int, now: Stamp) -> None:
        frame = self.frames[i]
        self.events.append(Event("truth", frame.stamp, frame.truth, time=now))
        self.decided(self.arbiter.register(frame.stamp), now)
        self.at(frame.stamp + stamp_from_seconds(self.cfg.deadline) + 1, _DEADLINE, None)
        if self.method.baseline == "distributed":
            self.encoder.offer(i)  # a frame still waiting is superseded: no answer for it
            if not self.encoding:
                self.encode_next(now)
        elif self.lvlm is not None and self.uploads.decide(frame.stamp, now).upload:
            self.upload(i, now)
            if self.uploads.rule is UploadRule.ADAS:  # the cloud answers it, not the SVLM
                if self.svlm is not None:
                    self.dropped(i, OFFLOADED, now)
                return
        if self.svlm is not None:
            superseded = self.slot.offer(i)
            if superseded is not None:
                self.dropped(superseded, SUPERSEDED, now)
            if not self.busy:
                self.start_next(now)

    def upload(self, i: int, now: Stamp, before_cloud_s: float = 0.0) -> None:
        """Frame i goes to the cloud at ``now``; its answer arrives ``before_cloud_s`` (the
        edge's part: Distributed VLM's encoder and features' upload) plus the cloud's
        latency later."""
        frame = self.frames[i]
        assert self.lvlm is not None
        self.arbiter.expect_lvlm(frame.stamp)
        answer = self.lvlm.answer(frame.name, frame.image(), self.question)
        arrival = now + stamp_from_seconds(before_cloud_s + self.cloud_latency(i))
        self.at(arrival, _LVLM, (i, answer, now))

    def encode_next(self, now: Stamp) -> None:
        """Distributed VLM: the edge encoder is free; it takes the newest waiting frame."""
        while (i := self.encoder.take()) is not None:
            if too_late(self.frames[i].stamp, now, self.cfg.deadline) is not None:
                continue  # no answer can come in time: the frame is answered invalid
            height, width = self.frames[i].image().shape[:2]
            self.encoding = True
            edge = self.cfg.distributed.edge_seconds(width, height)
            self.at(now + stamp_from_seconds(edge), _ENCODED, (i, edge))
            return

    def on_encoded(self, payload: tuple[int, float], now: Stamp) -> None:
        i, edge = payload
        self.encoding = False
        # the features are up: the cloud's LLM answers after its latency (the upload was
        # counted in ``edge``; the request is recorded as sent when the encoder started)
        self.upload(i, now - stamp_from_seconds(edge), before_cloud_s=edge)
        self.encode_next(now)

    def on_lvlm(self, i: int, answer: LvlmAnswer, sent: Stamp, now: Stamp) -> None:
        stamp = self.frames[i].stamp
        if answer.error:  # as cloud_bridge's failed request: no answer will come
            end = RequestEnd.FAILED if answer.end is RequestEnd.ANSWERED else answer.end
            self.uploads.on_outcome(stamp, now, end, seconds_between(sent, now))
            self.events.append(Event("lvlm", stamp, None, time=now))
            decision = self.arbiter.expect_lvlm(stamp, False)
            self.decided([decision] if decision else [], now)
            return
        self.uploads.on_outcome(stamp, now, RequestEnd.ANSWERED, seconds_between(sent, now))
        self.events.append(Event("lvlm", stamp, answer.labels, time=now))
        # context_manager
        self.context.on_lvlm(stamp, answer.answer, answer.rois, now, self.question)
        candidate = Candidate(Source.LVLM, answer.answer, answer.labels, now)
        decision = self.arbiter.offer(stamp, candidate)
        self.decided([decision] if decision else [], now)

    # --- svlm_node ---------------------------------------------------------------------

    def start_next(self, now: Stamp) -> None:
        """The SVLM is free at ``now``: it takes the waiting frame, if any."""
        assert self.svlm is not None
        while (i := self.slot.take()) is not None:
            frame = self.frames[i]
            why = too_late(frame.stamp, now, self.cfg.deadline)
            if why is not None:
                self.dropped(i, why, now)
                continue
            history, rois = self.context.history, self.context.rois
            inputs = svlm_inputs(frame.stamp, history, rois, self.compressor, self.rules)
            out = self.svlm.answer(frame.name, frame.image(), frame.stamp, self.question, inputs)
            seconds = self.cfg.svlm_seconds if self.cfg.svlm_seconds is not None else out.seconds
            self.busy = True
            self.at(now + stamp_from_seconds(seconds), _SVLM_DONE, (i, out, inputs))
            return

    def on_svlm_done(self, i: int, out: SvlmAnswer, inputs: SvlmInputs, now: Stamp) -> None:
        self.busy = False
        stamp = self.frames[i].stamp
        labels = self.task.parse(self.vocab, out.answer)
        self.events.append(
            Event(
                "svlm",
                stamp,
                labels,
                tokens_used=out.tokens_used,
                tokens_full=out.tokens_full,
                lvlm_history=inputs.cloud_turns,
                context=inputs.context_text,
                roi_stamp=inputs.roi_stamp,
                time=now,
            )
        )
        # svlm_node takes the waiting frame at once, with the context it holds: its own
        # answer reaches the history only through context_manager, after the round trip
        self.start_next(now)
        unsure = self.method.baseline == "laecips" and svlm_unsure(
            out.confidence, self.cfg.laecips_threshold
        )  # svlm_node's laecips_threshold (set by the laecips preset only)
        if self.lvlm is not None and self.uploads.decide_after_svlm(unsure).upload:
            self.upload(i, now)  # before the SVLM's answer is offered: the LVLM's may replace it
        # context_manager
        self.context.on_svlm(stamp, self.question, out.answer)
        decision = self.arbiter.offer(stamp, Candidate(Source.SVLM, out.answer, labels, now))
        self.decided([decision] if decision else [], now)

    def dropped(self, i: int, why: str, now: Stamp) -> None:
        self.events.append(
            Event("svlm", self.frames[i].stamp, None, dropped=True, why=why, time=now)
        )

    # --- context_manager ---------------------------------------------------------------

    def decided(self, decisions: Sequence[Decision], now: Stamp) -> None:
        for d in decisions:
            self.events.append(
                Event("final", d.stamp, d.labels, d.source, d.latency, time=min(now, 2**62))
            )


def apply(events: Sequence[Event], vocab: Vocabulary, correct: Correct = same_set) -> EvaluationLog:
    """The evaluation of a list of events (the same bookkeeping the live evaluator does);
    ``correct``: the task's rule (Task.correct)."""
    log = EvaluationLog(vocab.labels, correct)
    for e in events:
        if e.kind == "truth":
            log.truth(e.stamp, e.labels or ())
        elif e.kind == "lvlm":
            log.lvlm(e.stamp, e.labels)
        elif e.kind == "svlm":
            log.svlm(
                e.stamp,
                e.labels,
                tokens_used=e.tokens_used,
                tokens_full=e.tokens_full,
                dropped=e.dropped,
                lvlm_history=e.lvlm_history,
            )
        elif e.kind == "final":
            log.final(e.stamp, e.source, e.labels or (), e.latency)
    return log
