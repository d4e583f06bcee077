"""How long something has been failing, for diagnostics levels that mean something."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from spotvlm_ros.core.types import Stamp, seconds_between


@dataclass
class FailureStreak:
    """Outcomes over time: since when every outcome has been a failure.

    ``failing_for(now)`` is how long (s) only failures have been seen, 0 while the latest
    outcome was a success or nothing was seen yet. A diagnostic then says WARN or ERROR
    after a stretch of failures, not at the first one.
    """

    _first_failure: Stamp | None = None

    def record(self, now: Stamp, ok: bool) -> None:
        """One outcome at ``now``."""
        if ok:
            self._first_failure = None
        elif self._first_failure is None:
            self._first_failure = now

    def failing_for(self, now: Stamp) -> float:
        """Seconds since the first of the failures that followed the last success."""
        if self._first_failure is None:
            return 0.0
        return max(0.0, seconds_between(self._first_failure, now))


@dataclass
class RecentValues:
    """Values of the last ``window_s`` seconds (latencies, delays), for percentiles.

    Safe to use from two threads: nodes add from a worker and read from a timer.
    """

    window_s: float
    _items: deque[tuple[Stamp, float]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, now: Stamp, value: float) -> None:
        """Record ``value`` at ``now``."""
        with self._lock:
            self._items.append((now, value))

    def values(self, now: Stamp) -> list[float]:
        """The values of the window ending at ``now``, oldest first."""
        with self._lock:
            while self._items and seconds_between(self._items[0][0], now) > self.window_s:
                self._items.popleft()
            return [v for _, v in self._items]

    def rate(self, now: Stamp) -> float:
        """Values per second over the window."""
        return len(self.values(now)) / self.window_s if self.window_s > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
