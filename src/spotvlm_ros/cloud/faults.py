"""Injected latency and faults of the local LVLM server, seeded so that a run repeats."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from pathlib import Path


class LatencyModel(enum.Enum):
    """How the injected latency of each request is drawn."""

    FIXED = "fixed"  # always `latency`
    UNIFORM = "uniform"  # uniform in [latency_min, latency_max]
    LOGNORMAL = "lognormal"  # median `latency`, log-space sigma `latency_sigma`
    TRACE = "trace"  # replayed in order (and looped) from a file of seconds, one per line


class Fault(enum.Enum):
    """What goes wrong with a request, if anything."""

    NONE = "none"
    ERROR = "error"  # HTTP 500
    HANG = "hang"  # no reply until the client gives up
    MALFORMED = "malformed"  # a reply whose JSON is broken
    EMPTY = "empty"  # a reply with empty content


@dataclass(frozen=True)
class FaultConfig:
    """Latency and fault injection; rates are probabilities per request."""

    latency_model: LatencyModel = LatencyModel.FIXED
    latency: float = 0.0
    latency_min: float = 0.0
    latency_max: float = 0.0
    latency_sigma: float = 0.5
    trace: tuple[float, ...] = ()
    error_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    empty_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.hang_rate, self.malformed_rate, self.empty_rate)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
            raise ValueError(f"fault rates must be in [0, 1] and sum to <= 1, got {rates}")
        if min(self.latency, self.latency_min, self.latency_max) < 0 or not math.isfinite(
            self.latency
        ):
            raise ValueError("latencies must be finite and >= 0 s")
        if self.latency_model is LatencyModel.UNIFORM and self.latency_min > self.latency_max:
            raise ValueError(f"latency_min {self.latency_min} > latency_max {self.latency_max}")
        if self.latency_model is LatencyModel.TRACE and not self.trace:
            raise ValueError("the trace latency model needs a non-empty trace")


def read_trace(path: Path) -> tuple[float, ...]:
    """Seconds from a text file, one number per line ('#' starts a comment): the LVLM
    server's latency trace, spotvlm-eval's --latency-trace, spotvlm-fleet-sim's service
    times. A bad line is a ValueError naming the file and the line."""
    values = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{path}:{number}: not a number: {text!r}") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{path}:{number}: seconds must be finite and >= 0, got {value}")
        values.append(value)
    if not values:
        raise ValueError(f"{path}: no latencies in the trace")
    return tuple(values)


class FaultInjector:
    """Draws each request's latency and fault, in request order, from one seeded stream."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._trace_index = 0

    def latency(self) -> float:
        """The next request's injected latency (s)."""
        c = self.config
        if c.latency_model is LatencyModel.UNIFORM:
            return self._rng.uniform(c.latency_min, c.latency_max)
        if c.latency_model is LatencyModel.LOGNORMAL:
            return c.latency * math.exp(self._rng.gauss(0.0, c.latency_sigma)) if c.latency else 0.0
        if c.latency_model is LatencyModel.TRACE:
            value = c.trace[self._trace_index % len(c.trace)]
            self._trace_index += 1
            return value
        return c.latency

    def fault(self) -> Fault:
        """The next request's fault."""
        c = self.config
        draw = self._rng.random()
        for fault, rate in (
            (Fault.ERROR, c.error_rate),
            (Fault.HANG, c.hang_rate),
            (Fault.MALFORMED, c.malformed_rate),
            (Fault.EMPTY, c.empty_rate),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return Fault.NONE
