"""Deterministic replay of a labelled sequence in virtual time through the same core as the
live graph: upload policy, context replacement, compression, visual focus, arbitration and
the evaluation bookkeeping.

Frames arrive at their stamps. The SVLM takes a fixed (or its measured) compute time per
frame and works on one frame at a time; a frame it cannot start before the deadline is
dropped. Uploaded frames' LVLM answers arrive after the modelled cloud latency and enter
the SVLM's context (and ROIs) from the next frame the SVLM starts after their arrival.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from spotvlm_ros.core.arbiter import Arbiter, Candidate
from spotvlm_ros.core.compression import ContextCompressor, CountTokens, count_words
from spotvlm_ros.core.context import ContextConfig, ContextReplacement
from spotvlm_ros.core.evaluation import EvaluationLog
from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.task import DEFAULT_QUESTION
from spotvlm_ros.core.types import Roi, Source, Stamp, stamp_from_seconds
from spotvlm_ros.core.vocab import Vocabulary


@dataclass(frozen=True)
class Method:
    """Which parts of SpotVLM a method uses."""

    name: str
    svlm: bool
    lvlm: bool
    crm: bool = False
    ggvr: bool = False
    gtvr: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("edge_only", svlm=True, lvlm=False),
        Method("cloud_only", svlm=False, lvlm=True),
        Method("crm", svlm=True, lvlm=True, crm=True),
        Method("crm_ggvr", svlm=True, lvlm=True, crm=True, ggvr=True),
        Method("spotvlm", svlm=True, lvlm=True, crm=True, ggvr=True, gtvr=True),
    )
}
"""edge-only, cloud-only, and SpotVLM with its ablations (spotvlm = CRM + GGVR + GTVR)."""


@dataclass(frozen=True)
class SvlmAnswer:
    """What the SVLM said about a frame and what it cost."""

    answer: str
    seconds: float
    tokens_used: int
    tokens_full: int


@dataclass(frozen=True)
class LvlmAnswer:
    """What the LVLM said about a frame."""

    answer: str
    labels: frozenset[str]
    rois: tuple[Roi, ...]


class SvlmLike(Protocol):
    """The SVLM as the replay uses it."""

    def answer(
        self,
        name: str,
        image: np.ndarray,
        stamp: Stamp,
        question: str,
        context: str,
        rois: Sequence[Roi],
        roi_stamp: Stamp | None,
        ggvr: bool,
        gtvr: bool,
    ) -> SvlmAnswer:
        """Answer about one frame."""

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
    """Parameters of a replay."""

    deadline: float = 1.0
    svlm_seconds: float | None = 0.3  # None: use the measured compute time
    context: ContextConfig = field(default_factory=ContextConfig)
    context_budget: int = 96  # in count_tokens units (the SVLM's tokens where it has any)
    count_tokens: CountTokens = count_words
    upload: UploadPolicyConfig = field(default_factory=UploadPolicyConfig)
    question: str = DEFAULT_QUESTION


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
    arbiter = Arbiter(cfg.deadline)
    history = ContextReplacement(cfg.context)
    compressor = ContextCompressor(cfg.context_budget, count_tokens=cfg.count_tokens)
    upload = cfg.upload
    if method.lvlm and not method.svlm:  # cloud-only: every frame goes to the cloud
        upload = UploadPolicyConfig(mode=UploadMode.EVERY_FRAME, max_in_flight=1024)
    policy = UploadPolicy(upload)
    in_flight: list[tuple[Stamp, Stamp, LvlmAnswer]] = []  # (arrival, frame stamp, answer)
    latest_rois: tuple[Stamp, tuple[Roi, ...]] | None = None
    svlm_free: Stamp = -(2**62)
    events: list[Event] = []
    if svlm is not None:
        svlm.reset()

    def deliver(until: Stamp) -> None:
        nonlocal latest_rois
        while in_flight and in_flight[0][0] <= until:
            arrival, stamp, answer = in_flight.pop(0)
            policy.on_finished(stamp, (arrival - stamp) / 1e9)
            if method.crm:
                history.replace(stamp, answer.answer, arrival, cfg.question)
            if answer.rois and (latest_rois is None or stamp > latest_rois[0]):
                latest_rois = (stamp, answer.rois)

    for i, frame in enumerate(frames):
        t = frame.stamp
        events.append(Event("truth", t, frame.truth))
        deliver(t)
        candidates: list[Candidate] = []
        if method.lvlm and lvlm is not None and policy.decide(t, t).upload:
            policy.on_sent(t, t)
            answer = lvlm.answer(frame.name, frame.image(), cfg.question)
            arrival = t + stamp_from_seconds(cloud_latency(i))
            bisect.insort(in_flight, (arrival, t, answer), key=lambda item: item[:2])
            candidates.append(Candidate(Source.LVLM, answer.answer, answer.labels, arrival))
            events.append(Event("lvlm", t, answer.labels))
        if method.svlm and svlm is not None:
            start = max(t, svlm_free)
            if (start - t) / 1e9 > cfg.deadline:
                events.append(Event("svlm", t, None, dropped=True))
            else:
                deliver(start)
                compressed = compressor.for_frame(history, t) if method.crm else None
                entries = compressed.entries if compressed else ()
                context = compressed.text if compressed else ""
                use_rois = latest_rois if (method.ggvr or method.gtvr) else None
                out = svlm.answer(
                    frame.name,
                    frame.image(),
                    t,
                    cfg.question,
                    context,
                    use_rois[1] if use_rois else (),
                    use_rois[0] if use_rois else None,
                    method.ggvr and use_rois is not None,
                    method.gtvr and use_rois is not None,
                )
                seconds = cfg.svlm_seconds if cfg.svlm_seconds is not None else out.seconds
                svlm_free = start + stamp_from_seconds(seconds)
                history.add_svlm(t, cfg.question, out.answer)
                labels = vocab.parse_answer(out.answer)
                candidates.append(Candidate(Source.SVLM, out.answer, labels, svlm_free))
                cloud_turns = tuple(e.stamp for e in entries if e.source is Source.LVLM)
                events.append(
                    Event(
                        "svlm",
                        t,
                        labels,
                        tokens_used=out.tokens_used,
                        tokens_full=out.tokens_full,
                        lvlm_history=cloud_turns,
                    )
                )
        decision = arbiter.decide(t, candidates)
        events.append(Event("final", t, decision.labels, decision.source, decision.latency))
    return apply(events, vocab), events


def apply(events: Sequence[Event], vocab: Vocabulary) -> EvaluationLog:
    """The evaluation of a list of events (the same bookkeeping the live evaluator does)."""
    log = EvaluationLog(vocab.labels)
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
