"""Real-time arbitration: each frame's final answer against its deadline.

For frame T the answer is the LVLM's if it arrives within the deadline, else the SVLM's if
that does, else the frame is *invalid* (empty answer), which is how the paper scores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from spotvlm_ros.core.types import Source, Stamp, seconds_between, stamp_from_seconds


@dataclass(frozen=True)
class Candidate:
    """An answer for a frame and when it arrived."""

    source: Source
    answer: str
    labels: frozenset[str]
    arrival: Stamp


@dataclass(frozen=True)
class Decision:
    """A frame's final answer."""

    stamp: Stamp
    source: Source  # NONE when no answer made the deadline
    answer: str
    labels: frozenset[str]
    deadline_met: bool
    latency: float  # s from the frame stamp to the chosen answer's arrival (or the deadline)


@dataclass(frozen=True)
class Arbiter:
    """The rule: LVLM if in time, else SVLM if in time, else invalid."""

    deadline: float = 1.0  # s

    def __post_init__(self) -> None:
        if not self.deadline > 0.0:
            raise ValueError(f"deadline must be > 0 s, got {self.deadline}")

    def in_time(self, stamp: Stamp, candidate: Candidate) -> bool:
        """Whether ``candidate`` arrived within the deadline of the frame at ``stamp``."""
        return seconds_between(stamp, candidate.arrival) <= self.deadline

    def decide(self, stamp: Stamp, candidates: Iterable[Candidate]) -> Decision:
        """The final answer for the frame at ``stamp`` given every answer that arrived."""
        in_time = [c for c in candidates if self.in_time(stamp, c)]
        for source in (Source.LVLM, Source.SVLM):
            first = min(
                (c for c in in_time if c.source is source), key=lambda c: c.arrival, default=None
            )
            if first is not None:
                return Decision(
                    stamp,
                    source,
                    first.answer,
                    first.labels,
                    True,
                    seconds_between(stamp, first.arrival),
                )
        return Decision(stamp, Source.NONE, "", frozenset(), False, self.deadline)


@dataclass
class _Pending:
    candidates: list[Candidate] = field(default_factory=list)
    lvlm_expected: bool = False


@dataclass
class LiveArbiter:
    """Applies :class:`Arbiter` to a stream: every registered frame gets exactly one decision,
    as early as it can be known (an in-time LVLM answer wins at once; an SVLM answer wins
    at once if no LVLM answer is expected for the frame) and at its deadline otherwise.

    Results and upload notices may arrive before their frame is registered (they travel on
    other topics): they are held, boundedly, until it is.
    """

    arbiter: Arbiter = field(default_factory=Arbiter)
    max_pending: int = 64
    unknown: int = 0  # results for frames never registered (dropped from the early buffer)
    late: int = 0  # results for frames already decided
    _pending: dict[Stamp, _Pending] = field(default_factory=dict)
    _early: dict[Stamp, _Pending] = field(default_factory=dict)
    _decided: set[Stamp] = field(default_factory=set)

    def register(self, stamp: Stamp) -> list[Decision]:
        """Start arbitrating the frame at ``stamp``; returns the decisions this settles
        (the frame itself, if results for it came first, and frames forced out by the bound)."""
        decisions: list[Decision] = []
        if stamp in self._pending or stamp in self._decided:
            return decisions
        self._pending[stamp] = self._early.pop(stamp, _Pending())
        while len(self._pending) > self.max_pending:
            decisions.append(self._finish(min(self._pending)))
        settled = self._settle(stamp)
        return decisions + ([settled] if settled else [])

    def expect_lvlm(self, stamp: Stamp, expected: bool = True) -> Decision | None:
        """Say whether an LVLM answer may still come for the frame (it was uploaded, or its
        request failed); returns the frame's decision if that settles it."""
        pending = self._pending.get(stamp)
        if pending is None:
            if stamp not in self._decided:
                self._hold(stamp).lvlm_expected = expected
            return None
        pending.lvlm_expected = expected
        return self._settle(stamp)

    def offer(self, stamp: Stamp, candidate: Candidate) -> Decision | None:
        """Offer an answer; returns the frame's decision if it is now settled."""
        if stamp in self._decided:
            self.late += 1
            return None
        pending = self._pending.get(stamp)
        target = pending if pending is not None else self._hold(stamp)
        target.candidates.append(candidate)
        if candidate.source is Source.LVLM:
            target.lvlm_expected = False
        return self._settle(stamp) if pending is not None else None

    def due(self, now: Stamp) -> list[Decision]:
        """Decisions for every pending frame whose deadline has passed at ``now``."""
        limit = stamp_from_seconds(self.arbiter.deadline)
        expired = sorted(s for s in self._pending if now - s > limit)
        return [self._finish(s) for s in expired]

    def next_due(self) -> Stamp | None:
        """The time after which :meth:`due` decides the oldest pending frame (None when no
        frame is pending)."""
        if not self._pending:
            return None
        return min(self._pending) + stamp_from_seconds(self.arbiter.deadline)

    def pending(self) -> int:
        """Frames registered and not yet decided."""
        return len(self._pending)

    def _hold(self, stamp: Stamp) -> _Pending:
        held = self._early.get(stamp)
        if held is None:
            held = self._early[stamp] = _Pending()
            while len(self._early) > self.max_pending:
                del self._early[min(self._early)]
                self.unknown += 1
        return held

    def _settle(self, stamp: Stamp) -> Decision | None:
        """The decision for a pending frame if nothing that may still come can change it."""
        pending = self._pending[stamp]
        in_time = [c for c in pending.candidates if self.arbiter.in_time(stamp, c)]
        if any(c.source is Source.LVLM for c in in_time):
            return self._finish(stamp)
        if in_time and not pending.lvlm_expected:
            return self._finish(stamp)
        return None

    def _finish(self, stamp: Stamp) -> Decision:
        pending = self._pending.pop(stamp)
        self._decided.add(stamp)
        if len(self._decided) > 4 * self.max_pending:
            for old in sorted(self._decided)[: len(self._decided) - 2 * self.max_pending]:
                self._decided.discard(old)
        return self.arbiter.decide(stamp, pending.candidates)
