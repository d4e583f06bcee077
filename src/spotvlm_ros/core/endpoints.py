"""Several LVLM endpoints (replicas of one serving engine): health-aware choice and failover.

A request goes to the usable endpoint with the fewest requests in flight (ties in turn). An
endpoint that refuses connections, times out or fails with a server error is *down* for a
back-off that doubles with each failure in a row (``min_backoff_s`` .. ``max_backoff_s``);
after it, the next request tries it again, and one success makes it healthy. (A pool of one
endpoint asks it whatever its state, except while it is busy.) An endpoint
that answers 429 or 503 is *busy* until its ``Retry-After`` (it works, but asked for
less): other endpoints are preferred meanwhile. When every endpoint is down or busy the
pool says so and when the first one may be tried again, instead of hammering one.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from spotvlm_ros.core.types import NS_PER_S, Stamp, seconds_between


class Health(enum.Enum):
    """What the last request to an endpoint said about it."""

    HEALTHY = "healthy"
    DOWN = "down"  # connection refused, timeout, 5xx: retried after a back-off
    BUSY = "busy"  # 429 / 503 with Retry-After: retried after that


@dataclass
class Endpoint:
    """One endpoint's state."""

    url: str
    health: Health = Health.HEALTHY
    until: Stamp = 0  # down or busy until then
    failures: int = 0  # in a row
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    last_error: str = ""

    def usable(self, now: Stamp) -> bool:
        """Healthy, or its back-off or Retry-After is over."""
        return self.health is Health.HEALTHY or now >= self.until


@dataclass
class EndpointPool:
    """The endpoints of one LVLM, and which to ask next."""

    urls: tuple[str, ...]
    min_backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    endpoints: list[Endpoint] = field(init=False)
    _turn: int = 0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("no LVLM endpoint given")
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"an LVLM endpoint is listed twice: {list(self.urls)}")
        self.endpoints = [Endpoint(url) for url in self.urls]

    def choose(self, now: Stamp, exclude: frozenset[str] = frozenset()) -> Endpoint | None:
        """The endpoint to send the next request to, or None when none is usable now."""
        # A lone endpoint is never skipped for being down: there is no other to prefer, and
        # asking it each time (a refused connection costs a millisecond) notices its return
        # at once. A Retry-After (busy) is still honoured: the server asked for it.
        lone = len(self.endpoints) == 1
        usable = [
            e
            for e in self.endpoints
            if (e.usable(now) or (lone and e.health is Health.DOWN)) and e.url not in exclude
        ]
        if not usable:
            return None
        self._turn += 1
        n = len(self.endpoints)
        # fewest in flight first; among equals, take turns (round robin from _turn)
        return min(usable, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._turn) % n))

    def next_usable_in(self, now: Stamp) -> float:
        """Seconds until some endpoint may be tried again (0 if one may now)."""
        waits = [max(0.0, seconds_between(now, e.until)) for e in self.endpoints]
        return 0.0 if any(e.usable(now) for e in self.endpoints) else min(waits)

    def started(self, endpoint: Endpoint) -> None:
        """A request was sent to ``endpoint``."""
        endpoint.in_flight += 1

    def succeeded(self, endpoint: Endpoint) -> None:
        """It answered."""
        endpoint.in_flight -= 1
        endpoint.served += 1
        endpoint.failures = 0
        endpoint.health = Health.HEALTHY

    def failed(self, endpoint: Endpoint, now: Stamp, error: str, escalate: bool = True) -> float:
        """It is down (connection, server error) or slow (``escalate=False``: a timeout,
        kept at the shortest back-off); returns the back-off (s). Requests that were in
        flight when it went down fail too: they do not lengthen the back-off again."""
        endpoint.in_flight -= 1
        endpoint.failed += 1
        endpoint.last_error = error
        already_down = endpoint.health is Health.DOWN and not endpoint.usable(now)
        if not already_down:
            endpoint.failures += 1
        steps = endpoint.failures - 1 if escalate else 0
        backoff = float(min(self.max_backoff_s, self.min_backoff_s * 2.0**steps))
        endpoint.health = Health.DOWN
        endpoint.until = max(endpoint.until, now + int(backoff * NS_PER_S))
        return backoff

    def busy(self, endpoint: Endpoint, now: Stamp, retry_after_s: float, error: str) -> None:
        """It asked for less load (429/503) until ``retry_after_s`` from now."""
        endpoint.in_flight -= 1
        endpoint.last_error = error
        endpoint.health = Health.BUSY
        endpoint.until = now + int(max(0.0, retry_after_s) * NS_PER_S)

    def finished_otherwise(self, endpoint: Endpoint) -> None:
        """A request ended in a way that says nothing about the endpoint's health (a 4xx
        about the request itself, an unparsable reply)."""
        endpoint.in_flight -= 1
        endpoint.served += 1

    def summary(self, now: Stamp) -> dict[str, str]:
        """Per endpoint: its health (with how long it stays so) and its counts."""
        out = {}
        for e in self.endpoints:
            state = e.health.value
            if e.health is not Health.HEALTHY and not e.usable(now):
                state += f" for {seconds_between(now, e.until):.1f} s"
            out[e.url] = f"{state}; {e.served} answered, {e.failed} failed, {e.in_flight} in flight"
        return out


MAX_RETRY_AFTER_S = 60.0
"""The longest a Retry-After is honoured (a server asking for hours is asked again sooner)."""


def parse_retry_after(value: str | None, default_s: float) -> float:
    """A ``Retry-After`` header's delay in seconds (delta-seconds or an HTTP date), within
    [0, MAX_RETRY_AFTER_S]; ``default_s`` when absent or unreadable."""
    if not value:
        return default_s
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import datetime as dt
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return default_s
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return default_s
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))
