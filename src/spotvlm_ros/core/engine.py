"""The per-frame engine: SpotVLM's central step, written once for the live graph and for
the offline replay (and the fleet simulation).

ROS-free and clock-free: every time is an argument (``now``), so the nodes drive it in
real time and the replay in virtual time. The graph is distributed, and so is the engine:
each part belongs to the node that owns its state.

- :class:`FrameSlot` (svlm_node): which frame the SVLM takes. One frame waits while the
  SVLM is busy; a newer one replaces it (the older is answered as dropped, superseded), and
  a frame the SVLM cannot start within the deadline is dropped.
- :class:`ContextState` (context_manager): context replacement (CRM) and the ROIs handed to
  the SVLM, which are taken only from LVLM answers that entered the history.
- :func:`svlm_inputs` (svlm_node): what the SVLM gets for a frame: the history shown to
  it, compressed, as prompt text or chat turns, and the ROIs if they are older than the
  frame and young enough.
- :class:`Uploads` (cloud_bridge): the upload decision (SpotVLM's policy, or a baseline's
  rule: :class:`UploadRule`), and one :meth:`Uploads.on_outcome` for every request's end.
- arbitration at the deadline is :class:`spotvlm_ros.core.arbiter.LiveArbiter`
  (context_manager).

docs/architecture.md shows the parts and their three drivers.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from spotvlm_ros.core.baselines import LatencyAwareOffload, is_hard
from spotvlm_ros.core.compression import ContextCompressor
from spotvlm_ros.core.context import (
    ContextConfig,
    ContextReplacement,
    HistoryEntry,
    ReplacementOutcome,
)
from spotvlm_ros.core.policy import UploadDecision, UploadPolicy
from spotvlm_ros.core.types import Roi, Source, Stamp, seconds_between

T = TypeVar("T")

SUPERSEDED = "superseded by a newer frame while the model was busy"


def too_late(stamp: Stamp, now: Stamp, deadline_s: float) -> str | None:
    """Why the frame at ``stamp`` cannot be started at ``now`` (None if it can)."""
    waited = seconds_between(stamp, now)
    if waited > deadline_s:
        return f"could not start before the deadline ({waited:.2f} s after its stamp)"
    return None


@dataclass
class FrameSlot(Generic[T]):
    """The one place in front of a busy model: the newest frame wins.

    Not thread-safe by itself (:class:`spotvlm_ros.core.worker.LatestWorker` guards it)."""

    _waiting: T | None = None

    def offer(self, item: T) -> T | None:
        """Put ``item`` in the slot; returns the item it superseded (to be answered as
        dropped), if any."""
        superseded, self._waiting = self._waiting, item
        return superseded

    def take(self) -> T | None:
        """The waiting item, if any; the slot is then empty."""
        item, self._waiting = self._waiting, None
        return item

    @property
    def waiting(self) -> T | None:
        """The item in the slot (None when empty)."""
        return self._waiting


@dataclass
class RecentFrames(Generic[T]):
    """The frames of the last ``max_age_s`` (at most ``max_count`` of them), kept for a
    request that comes after them (cloud_bridge under LAECIPS: the SVLM asks the cloud about
    a frame once it has answered it); each frame is given out once."""

    max_count: int
    max_age_s: float
    asked_kept: int = 256  # stamps remembered as asked for, so that none is given twice
    _frames: OrderedDict[Stamp, T] = field(default_factory=OrderedDict)
    _asked: OrderedDict[Stamp, None] = field(default_factory=OrderedDict)

    def hold(self, stamp: Stamp, item: T, now: Stamp) -> None:
        """Keep ``item`` (the frame at ``stamp``), letting go of what is too old or too many
        (the item itself, if it is already older than ``max_age_s``)."""
        self._frames[stamp] = item
        while self._frames and (
            len(self._frames) > self.max_count
            or seconds_between(next(iter(self._frames)), now) > self.max_age_s
        ):
            self._frames.popitem(last=False)

    def take(self, stamp: Stamp) -> tuple[bool, T | None]:
        """(whether this is the first ask for ``stamp``, its frame if still held): a second
        ask (a redelivered request) gives (False, None)."""
        if stamp in self._asked:
            return False, None
        self._asked[stamp] = None
        while len(self._asked) > self.asked_kept:
            self._asked.popitem(last=False)
        return True, self._frames.pop(stamp, None)

    def __len__(self) -> int:
        return len(self._frames)


@dataclass
class ContextState:
    """What context_manager owns for the SVLM: the history (with context replacement) and
    the newest ROIs of an LVLM answer that entered it."""

    config: ContextConfig = field(default_factory=ContextConfig)
    history: ContextReplacement = field(init=False)
    rois: tuple[Stamp, tuple[Roi, ...]] | None = None

    def __post_init__(self) -> None:
        self.history = ContextReplacement(self.config)

    def on_svlm(self, stamp: Stamp, question: str, answer: str) -> None:
        """The SVLM answered the frame at ``stamp``."""
        self.history.add_svlm(stamp, question, answer)

    def on_lvlm(
        self, stamp: Stamp, answer: str, rois: Sequence[Roi], arrival: Stamp, question: str = ""
    ) -> ReplacementOutcome:
        """The LVLM's answer for the frame at ``stamp`` arrived at ``arrival``. Its ROIs are
        handed to the SVLM only if the answer entered the history (replaced or inserted):
        a stale, duplicate or superseded answer changes neither."""
        outcome = self.history.replace(stamp, answer, arrival, question)
        if rois and outcome in (ReplacementOutcome.REPLACED, ReplacementOutcome.INSERTED):
            self.rois = (stamp, tuple(rois))
        return outcome

    def turns(self) -> tuple[HistoryEntry, ...]:
        """Every turn held (what a ContextUpdate carries)."""
        return self.history.turns()


@dataclass(frozen=True)
class InputRules:
    """How svlm_node turns the context into the SVLM's inputs."""

    ggvr: bool = True
    gtvr: bool = True
    roi_max_age_s: float = 10.0
    history_form: str = "text"  # "text" in the prompt, or previous "chat" turns
    use_history: bool = True  # False: no context at all (the edge-only baseline)

    def __post_init__(self) -> None:
        if self.history_form not in ("text", "chat"):
            raise ValueError(f"history_form must be 'text' or 'chat', got {self.history_form!r}")
        if not self.roi_max_age_s >= 0.0:
            raise ValueError(f"roi_max_age_s must be >= 0 s, got {self.roi_max_age_s}")


@dataclass(frozen=True)
class SvlmInputs:
    """Everything the SVLM gets for one frame besides the image and the question."""

    entries: tuple[HistoryEntry, ...]  # the turns shown (after compression)
    context_text: str  # the history as prompt text ("" in the chat form)
    chat: tuple[dict[str, str], ...]  # the history as previous chat turns (chat form)
    rois: tuple[Roi, ...]  # the ROIs to focus on (empty: none usable)
    roi_stamp: Stamp | None  # the frame they come from
    ggvr: bool
    gtvr: bool
    tracking: bool = False  # GTVR is on for this run: every frame's features are kept

    @property
    def cloud_turns(self) -> tuple[Stamp, ...]:
        """The frames whose LVLM answer is in the shown history."""
        return tuple(e.stamp for e in self.entries if e.source is Source.LVLM)


NO_INPUTS = SvlmInputs((), "", (), (), None, False, False)


def svlm_inputs(
    stamp: Stamp,
    history: ContextReplacement,
    rois: tuple[Stamp, Sequence[Roi]] | None,
    compressor: ContextCompressor,
    rules: InputRules,
) -> SvlmInputs:
    """The SVLM's inputs for the frame at ``stamp``: the history as shown to it (turns of
    earlier frames, compressed to the budget) and the ROIs if they come from an earlier
    frame no older than ``roi_max_age_s``."""
    entries: tuple[HistoryEntry, ...] = ()
    text, chat = "", tuple[dict[str, str], ...]()
    if rules.use_history:
        compressed = compressor.for_frame(history, stamp)
        entries, text = compressed.entries, compressed.text
        if rules.history_form == "chat":
            chat, text = tuple(compressor.chat_messages(entries, stamp)), ""
    focus_rois: tuple[Roi, ...] = ()
    roi_stamp = None
    if (
        (rules.ggvr or rules.gtvr)
        and rois is not None
        and rois[1]
        and rois[0] < stamp
        and seconds_between(rois[0], stamp) <= rules.roi_max_age_s
    ):
        roi_stamp, focus_rois = rois[0], tuple(rois[1])
    focused = roi_stamp is not None
    return SvlmInputs(
        entries,
        text,
        chat,
        focus_rois,
        roi_stamp,
        rules.ggvr and focused,
        rules.gtvr and focused,
        tracking=rules.gtvr,
    )


class RequestEnd(enum.Enum):
    """How an LVLM request ended, as the upload policy sees it."""

    ANSWERED = "answered"  # a usable answer: its round trip is the cloud's latency
    UNUSABLE = "unusable"  # a reply that could not be used: its round trip still counts
    TIMED_OUT = "timed_out"  # no reply in time: the cloud is at least that slow
    BUSY = "busy"  # 429/503 from every replica: hold uploads for its Retry-After
    FAILED = "failed"  # refused, unreachable, or never sent: says nothing of the speed


def svlm_unsure(confidence: float, threshold: float) -> bool:
    """Whether the SVLM asks the cloud about its frame (LAECIPS's gate, svlm_node's
    ``laecips_threshold``; 0 turns it off)."""
    return threshold > 0.0 and is_hard(confidence, threshold)


class UploadRule(enum.Enum):
    """Which rule picks the frames the cloud answers."""

    POLICY = "policy"  # SpotVLM and cloud-only: the upload policy, when the frame arrives
    ADAS = "adas"  # when the frame arrives, while the cloud is predicted in time; the
    #               SVLM does not answer an offloaded frame (core.baselines)
    LAECIPS = "laecips"  # after the SVLM's answer, when it is unsure (core.baselines)


@dataclass
class Uploads:
    """One camera's uploads: the rule's decision, and every request's end fed back.

    Under ``UploadRule.POLICY`` the :class:`UploadPolicy` decides (and learns from every
    end); the baselines' rules decide by themselves (``policy`` is then left untouched)."""

    policy: UploadPolicy = field(default_factory=UploadPolicy)
    rule: UploadRule = UploadRule.POLICY
    deadline_s: float = 1.0  # ADAS predicts against it
    offload: LatencyAwareOffload = field(init=False)  # ADAS's prediction
    skipped: int = 0  # frames the policy did not upload
    backoffs: int = 0  # BUSY ends that slowed the uploads down

    def __post_init__(self) -> None:
        self.offload = LatencyAwareOffload(self.deadline_s)

    def decide(self, stamp: Stamp, now: Stamp) -> UploadDecision:
        """Whether to upload the frame at ``stamp`` when it arrives; an upload is recorded
        as sent."""
        if self.rule is UploadRule.LAECIPS:
            return UploadDecision(False, "LAECIPS asks the cloud after the SVLM, if unsure")
        if self.rule is UploadRule.ADAS:
            cap = self.policy.config.max_in_flight
            if self.policy.in_flight >= cap:  # the client would refuse it unsent
                self.skipped += 1
                return UploadDecision(False, f"ADAS: {cap} requests in flight (max_in_flight)")
            if self.offload.decide(now):
                self.policy.on_sent(stamp, now)
                return UploadDecision(True, "ADAS: the cloud is predicted in time (or probed)")
            self.skipped += 1
            predicted = self.offload.predicted_s or 0.0
            return UploadDecision(
                False, f"ADAS: the cloud is predicted late ({predicted:.2f} s round trip)"
            )
        decision = self.policy.decide(stamp, now)
        if decision.upload:
            self.policy.on_sent(stamp, now)
        else:
            self.skipped += 1
        return decision

    def decide_after_svlm(self, cloud_requested: bool) -> UploadDecision:
        """Whether to upload a frame once the SVLM has answered it (LAECIPS: when the SVLM
        asked for the cloud, being unsure: :func:`svlm_unsure`; the other rules decided
        when the frame arrived)."""
        if self.rule is not UploadRule.LAECIPS:
            return UploadDecision(False, "decided when the frame arrived")
        if cloud_requested:
            return UploadDecision(True, "LAECIPS: the SVLM is unsure")
        self.skipped += 1
        return UploadDecision(False, "LAECIPS: the SVLM is sure enough")

    def on_outcome(
        self,
        stamp: Stamp,
        now: Stamp,
        end: RequestEnd,
        latency: float | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """The request for the frame at ``stamp`` ended at ``now``; ``latency``: its round
        trip (s), or the time waited."""
        if self.rule is UploadRule.ADAS:
            self.policy.on_finished(stamp, None)  # only its in-flight count is used
            waited = latency or 0.0
            if end is RequestEnd.ANSWERED:
                self.offload.observe(waited)
            else:  # a cloud that fails is not one in time
                self.offload.observe(max(waited, 2 * self.deadline_s))
            return
        if self.rule is UploadRule.LAECIPS:
            return
        if end is RequestEnd.BUSY:
            self.policy.on_finished(stamp, None)
            self.policy.back_off(now, retry_after_s if retry_after_s is not None else 1.0)
            self.backoffs += 1
            return
        timed = end in (RequestEnd.ANSWERED, RequestEnd.UNUSABLE, RequestEnd.TIMED_OUT)
        self.policy.on_finished(stamp, (latency or None) if timed else None)
        if end is RequestEnd.ANSWERED:
            self.policy.relieved()
