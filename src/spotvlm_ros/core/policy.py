"""The upload policy: which frames are also sent to the cloud model.

Every frame is answered on board. A frame is uploaded only while fewer than
``max_in_flight`` requests are outstanding, so the cloud never builds a queue; in the
default latency-adaptive mode the uploads are also spread over the observed cloud latency,
so that answers come back evenly and the cloud always works on a recent frame.

Back-pressure from a shared server: an answer 429 or 503 holds every upload until its
``Retry-After`` and doubles a pressure factor that widens the spacing of later uploads (in
every mode); each answered request halves it again, and it fades by itself (half-life
5 s), so the upload rate falls while the server is saturated and recovers when it is not.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from spotvlm_ros.core.types import Stamp, seconds_between, stamp_from_seconds

MAX_PRESSURE = 8.0
"""The most the spacing of uploads is widened under back-pressure."""

PRESSURE_HALF_LIFE_S = 5.0
"""Without a new 429/503 the pressure halves this often, answers or not (a bridge that
uploads rarely under pressure would otherwise take long to learn the server recovered)."""


class UploadMode(enum.Enum):
    """How frames are chosen for upload (always within the in-flight bound)."""

    EVERY_FRAME = "every_frame"
    LATENCY_ADAPTIVE = "latency_adaptive"
    FIXED_STRIDE = "fixed_stride"


@dataclass(frozen=True)
class UploadPolicyConfig:
    """Parameters of the upload policy.

    Attributes:
        mode: see :class:`UploadMode`.
        max_in_flight: N, the most requests outstanding at once (>= 1).
        stride: in FIXED_STRIDE mode, upload every ``stride``-th frame (>= 1).
    """

    mode: UploadMode = UploadMode.LATENCY_ADAPTIVE
    max_in_flight: int = 2
    stride: int = 2

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


@dataclass(frozen=True)
class UploadDecision:
    """Whether to upload a frame, and why."""

    upload: bool
    reason: str


@dataclass
class UploadPolicy:
    """Decides per frame whether to upload; tracks requests in flight and cloud latency."""

    config: UploadPolicyConfig = field(default_factory=UploadPolicyConfig)
    last_latency: float | None = None  # the last observed round trip (s)
    _in_flight: dict[Stamp, Stamp] = field(default_factory=dict)  # frame stamp -> sent at
    _last_upload: Stamp | None = None
    _frames_seen: int = 0
    pressure: float = 1.0  # spacing factor: doubled by each 429/503, halved by each answer
    _held_until: Stamp | None = None
    _pressed_at: Stamp | None = None
    # spreads the end of a Retry-After hold (1 to 1.5 times it): bridges refused together
    # must not all come back at the same instant and be refused together again
    rng: random.Random = field(default_factory=random.Random)

    def pressure_at(self, now: Stamp) -> float:
        """The spacing factor at ``now``, faded since the last 429/503."""
        if self._pressed_at is None or self.pressure <= 1.0:
            return 1.0
        since = max(0.0, seconds_between(self._pressed_at, now))
        faded = float(0.5 ** (since / PRESSURE_HALF_LIFE_S))
        return max(1.0, self.pressure * faded)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet finished."""
        return len(self._in_flight)

    def expected_latency(self, now: Stamp) -> float | None:
        """The latency to plan with: the last observed one, or longer if a request in flight
        has already taken longer (the cloud is slowing down)."""
        oldest = min(self._in_flight.values(), default=None)
        waiting = seconds_between(oldest, now) if oldest is not None else 0.0
        if self.last_latency is None:
            return waiting if oldest is not None else None
        return max(self.last_latency, waiting)

    def decide(self, stamp: Stamp, now: Stamp) -> UploadDecision:
        """Whether to upload the frame at ``stamp``, considered at ``now``."""
        self._frames_seen += 1
        n = self.config.max_in_flight
        if stamp in self._in_flight:
            return UploadDecision(False, "this frame is already in flight")
        if self.in_flight >= n:
            return UploadDecision(False, f"{self.in_flight} requests in flight (max {n})")
        if self._held_until is not None and now < self._held_until:
            wait = seconds_between(now, self._held_until)
            return UploadDecision(False, f"the server asked to wait (Retry-After): {wait:.1f} s")
        mode = self.config.mode
        pressure = self.pressure_at(now)
        if mode is not UploadMode.LATENCY_ADAPTIVE and pressure > 1.0 and self._last_upload:
            spacing = (pressure - 1.0) * (self.expected_latency(now) or 1.0) / n
            since = seconds_between(self._last_upload, now)
            if since < spacing:
                return UploadDecision(
                    False, f"back-pressure x{pressure:.1f}: {since:.2f} s < {spacing:.2f} s"
                )
        if mode is UploadMode.FIXED_STRIDE and (self._frames_seen - 1) % self.config.stride:
            return UploadDecision(False, f"not a multiple of stride {self.config.stride}")
        if mode is UploadMode.LATENCY_ADAPTIVE and self._last_upload is not None:
            latency = self.expected_latency(now)
            if latency is not None:
                spacing = latency / n * pressure
                since = seconds_between(self._last_upload, now)
                if since < spacing:
                    return UploadDecision(
                        False, f"{since:.2f} s since last upload < latency/N = {spacing:.2f} s"
                    )
        return UploadDecision(True, "upload")

    def on_sent(self, stamp: Stamp, now: Stamp) -> None:
        """Record that the frame at ``stamp`` was uploaded at ``now``."""
        self._in_flight[stamp] = now
        self._last_upload = now

    def on_finished(self, stamp: Stamp, latency: float | None) -> None:
        """Record the end of the request for ``stamp`` (success or failure).

        ``latency`` is its round trip (s); a timeout should report the time waited.
        """
        self._in_flight.pop(stamp, None)
        if latency is not None and latency >= 0.0:
            self.last_latency = latency

    def back_off(self, now: Stamp, retry_after_s: float) -> None:
        """The server answered 429/503: hold uploads for ``retry_after_s`` (up to half again,
        at random) and widen the spacing of the ones after."""
        wait = max(0.0, retry_after_s) * (1.0 + 0.5 * self.rng.random())
        until = now + stamp_from_seconds(wait)
        self._held_until = max(self._held_until or until, until)
        self.pressure = min(MAX_PRESSURE, self.pressure_at(now) * 2.0)
        self._pressed_at = now

    def relieved(self) -> None:
        """A request was answered: the pressure eases."""
        self.pressure = max(1.0, self.pressure / 2.0)
