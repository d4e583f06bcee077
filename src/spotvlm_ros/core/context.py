"""Context replacement (CRM): the SVLM's short history, into which late LVLM answers are put.

The SVLM keeps the (question, answer) turns of the last K frames. When the LVLM's answer for
frame T-d arrives and d <= delta, it replaces the SVLM's own answer for that frame and is
placed as the *oldest* entry of the history: it is the most reliable turn, and everything
the SVLM said since is newer. At most one cloud turn is kept: the one of the newest frame.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from spotvlm_ros.core.types import Source, Stamp, seconds_between


@dataclass(frozen=True)
class HistoryEntry:
    """One turn of the history: what was asked about the frame at ``stamp`` and the answer."""

    stamp: Stamp
    question: str
    answer: str
    source: Source


@dataclass(frozen=True)
class ContextConfig:
    """Parameters of context replacement.

    Attributes:
        max_entries: K, the number of history turns kept for the prompt (>= 1).
        delta: the largest delay (s) between a frame and the arrival of its LVLM answer for
            the answer to be used, and the largest age (s) of a cloud turn still shown.
    """

    max_entries: int = 2
    delta: float = 10.0

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {self.max_entries}")
        if not self.delta >= 0.0:
            raise ValueError(f"delta must be >= 0 s, got {self.delta}")


class ReplacementOutcome(enum.Enum):
    """What :meth:`ContextReplacement.replace` did with an LVLM answer."""

    REPLACED = "replaced"  # the SVLM's own answer for that frame was replaced
    INSERTED = "inserted"  # no SVLM turn for that frame was held; the answer became the oldest
    STALE = "stale"  # d > delta: ignored
    DUPLICATE = "duplicate"  # an answer for the same frame was already accepted: ignored
    SUPERSEDED = "superseded"  # an answer for a newer frame was already accepted: ignored


@dataclass
class ReplacementCounters:
    """How many LVLM answers ended in each outcome, and how many arrived before their frame."""

    replaced: int = 0
    inserted: int = 0
    stale: int = 0
    duplicate: int = 0
    superseded: int = 0
    negative_delay: int = 0
    svlm_duplicates: int = 0

    def count(self, outcome: ReplacementOutcome) -> None:
        """Add one to the counter of ``outcome``."""
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class ContextReplacement:
    """The history of SVLM turns with context replacement by late LVLM answers.

    Every method is deterministic in its arguments, whatever order results arrive in: the
    first answer for a frame wins over a later duplicate, and a cloud answer for an older
    frame never displaces the one for a newer frame.
    """

    config: ContextConfig = field(default_factory=ContextConfig)
    counters: ReplacementCounters = field(default_factory=ReplacementCounters)
    _svlm: dict[Stamp, HistoryEntry] = field(default_factory=dict)
    _lvlm: HistoryEntry | None = None

    def add_svlm(self, stamp: Stamp, question: str, answer: str) -> None:
        """Record the SVLM's own answer for the frame at ``stamp``."""
        if stamp in self._svlm:
            self.counters.svlm_duplicates += 1
            return
        self._svlm[stamp] = HistoryEntry(stamp, question, answer, Source.SVLM)
        # Only the newest K SVLM turns can ever be shown; forget the rest (bounded memory).
        if len(self._svlm) > self.config.max_entries:
            for old in sorted(self._svlm)[: len(self._svlm) - self.config.max_entries]:
                del self._svlm[old]

    def replace(
        self, stamp: Stamp, answer: str, arrival: Stamp, question: str = ""
    ) -> ReplacementOutcome:
        """Offer the LVLM's ``answer`` for the frame at ``stamp``, arrived at ``arrival``."""
        delay = seconds_between(stamp, arrival)
        if delay < 0.0:
            # The answer arrived "before" its frame: clocks disagree. Use it, but say so.
            self.counters.negative_delay += 1
        outcome = self._classify(stamp, delay)
        if outcome in (ReplacementOutcome.REPLACED, ReplacementOutcome.INSERTED):
            if not question and stamp in self._svlm:
                question = self._svlm[stamp].question
            self._lvlm = HistoryEntry(stamp, question, answer, Source.LVLM)
        self.counters.count(outcome)
        return outcome

    def _classify(self, stamp: Stamp, delay: float) -> ReplacementOutcome:
        if delay > self.config.delta:
            return ReplacementOutcome.STALE
        if self._lvlm is not None and stamp == self._lvlm.stamp:
            return ReplacementOutcome.DUPLICATE
        if self._lvlm is not None and stamp < self._lvlm.stamp:
            return ReplacementOutcome.SUPERSEDED
        return ReplacementOutcome.REPLACED if stamp in self._svlm else ReplacementOutcome.INSERTED

    def turns(self) -> tuple[HistoryEntry, ...]:
        """Every turn held (the cloud turn first, then the SVLM turns oldest first): the
        state that :meth:`from_turns` rebuilds, e.g. in another process."""
        cloud = (self._lvlm,) if self._lvlm is not None else ()
        return cloud + tuple(self._svlm[s] for s in sorted(self._svlm))

    @classmethod
    def from_turns(cls, config: ContextConfig, turns: Iterable[HistoryEntry]) -> ContextReplacement:
        """A history holding ``turns`` (as :meth:`turns` gives them), for :meth:`entries`."""
        history = cls(config)
        for turn in turns:
            if turn.source is Source.LVLM:
                if history._lvlm is None or turn.stamp > history._lvlm.stamp:
                    history._lvlm = turn
            else:
                history._svlm[turn.stamp] = turn
        return history

    @property
    def lvlm_entry(self) -> HistoryEntry | None:
        """The accepted cloud turn, however old."""
        return self._lvlm

    def entries(self, before: Stamp | None = None) -> tuple[HistoryEntry, ...]:
        """The history to show for the frame at ``before``, oldest first, at most K turns.

        Only turns of frames strictly before ``before`` are shown (all, when it is None).
        The cloud turn comes first unless it is older than ``delta`` at ``before``; then the
        newest SVLM turns of frames after it. SVLM turns of frames at or before the cloud
        turn's frame are superseded by it, whether or not it is still shown.
        """
        cloud = self._lvlm
        # Replaced SVLM turns stay replaced, even once the cloud turn is too old to show.
        svlm = [
            self._svlm[s]
            for s in sorted(self._svlm)
            if (cloud is None or s > cloud.stamp) and (before is None or s < before)
        ]
        lvlm = cloud if cloud is None or before is None or self._shown_at(cloud, before) else None
        room = self.config.max_entries - (1 if lvlm is not None else 0)
        newest = svlm[len(svlm) - room :] if room > 0 else []
        return ((lvlm,) if lvlm is not None else ()) + tuple(newest)

    def _shown_at(self, lvlm: HistoryEntry, before: Stamp) -> bool:
        return lvlm.stamp < before and seconds_between(lvlm.stamp, before) <= self.config.delta
