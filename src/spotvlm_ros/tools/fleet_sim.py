"""spotvlm-fleet-sim: a discrete-event simulation of a fleet sharing LVLM replicas.

R robots x C cameras produce frames at the task rate; each camera's cloud_bridge decides
uploads with the package's own upload policy (core.policy) and chooses a replica with its
own endpoint pool (core.endpoints), and feeds every request's end back through the same
``Uploads.on_outcome`` (core.engine) as the bridges do. S replicas serve K
requests at once each, a request beyond that waits in the replica's queue (``--queue``,
-1 unbounded) or is refused with 429 + Retry-After (``--queue 0``, as the local server
does). Service times are drawn from measurements: a file of seconds (``--service-trace``,
e.g. latencies measured on a real vLLM deployment, or by scripts/bench_fleet.py on the
local server), or a log-normal fit (``--service-median``, ``--service-sigma``). The network
adds a one-way delay with jitter and loses a request with a probability (lost: the bridge
times out).

For each number of cameras per replica it prints, per upload policy: the share of frames
whose LVLM answer is on time (within the deadline), the age of the cloud context the SVLM
works with (time since the newest LVLM answer's frame, p50/p95), server utilisation and
queueing delay; and the fleet size at which each policy's context age passes ``delta``.

    spotvlm-fleet-sim --replicas 2 --slots 4 --service-median 2.0 --cameras-per-replica 1,2,4,8,16
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotvlm_ros.cloud.faults import read_trace
from spotvlm_ros.core.context import ContextConfig
from spotvlm_ros.core.endpoints import EndpointPool
from spotvlm_ros.core.engine import RequestEnd, Uploads
from spotvlm_ros.core.health import percentile
from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.parameters import DEADLINE_S, LVLM_TIMEOUT_S, RATE_HZ


@dataclass(frozen=True)
class FleetConfig:
    """One simulated fleet."""

    cameras: int = 6  # in total (robots x cameras per robot)
    rate_hz: float = RATE_HZ
    deadline_s: float = DEADLINE_S
    delta_s: float = ContextConfig().delta  # an LVLM answer older than this is no context
    replicas: int = 1
    slots: int = 4  # requests a replica serves at once
    queue: int = -1  # waiting requests per replica beyond its slots (-1: unbounded, 0: 429)
    retry_after_s: float = 1.0
    service: tuple[float, ...] = (2.0,)  # service times to draw from (s)
    net_delay_s: float = 0.02  # one way
    net_jitter_s: float = 0.005
    loss: float = 0.0
    timeout_s: float = LVLM_TIMEOUT_S
    mode: UploadMode = UploadPolicyConfig().mode
    max_in_flight: int = 2
    stride: int = 2
    duration_s: float = 120.0
    warm_up_s: float = 10.0  # not scored
    seed: int = 0


@dataclass
class FleetResult:
    """What a run measured (scored after the warm-up)."""

    frames: int = 0
    uploads: int = 0
    answered: int = 0
    on_time: int = 0
    refused: int = 0  # 429
    lost: int = 0  # timed out (lost on the network, or too slow)
    latencies: list[float] = field(default_factory=list)  # answered round trips (s)
    ages: list[float] = field(default_factory=list)  # context age at each frame (s; inf: none)
    no_context: int = 0  # frames with no LVLM answer within delta
    queue_delays: list[float] = field(default_factory=list)
    busy_slot_s: float = 0.0
    capacity_slot_s: float = 0.0
    max_waiting: int = 0  # the longest any replica's queue got
    per_camera: dict[int, list[int]] = field(default_factory=dict)  # camera -> [frames, none]

    def summary(self) -> dict[str, float]:
        """The figures, as the tables print them."""
        n = max(1, self.frames)
        ages = self.ages or [math.inf]
        return {
            "on_time_share": self.on_time / n,
            "upload_share": self.uploads / n,
            "refused_share": self.refused / max(1, self.uploads),
            "latency_mean_s": statistics.fmean(self.latencies) if self.latencies else math.nan,
            "context_age_p50_s": percentile(ages, 0.5),
            "context_age_p95_s": percentile(ages, 0.95),
            "no_context_share": self.no_context / n,
            "utilisation": self.busy_slot_s / self.capacity_slot_s if self.capacity_slot_s else 0,
            "queue_delay_mean_s": (
                statistics.fmean(self.queue_delays) if self.queue_delays else 0.0
            ),
            "queue_delay_p95_s": percentile(self.queue_delays, 0.95) if self.queue_delays else 0,
            # cameras without cloud context for most of their frames (an unfair server)
            "starved_share": (
                sum(none > frames / 2 for frames, none in self.per_camera.values())
                / max(1, len(self.per_camera))
            ),
        }


@dataclass
class _Camera:
    uploads: Uploads
    pool: EndpointPool
    newest: float | None = None  # frame time of the newest LVLM answer arrived


@dataclass
class _Replica:
    busy: int = 0
    waiting: list[tuple[float, int]] = field(default_factory=list)  # (arrival, request)


def simulate(config: FleetConfig) -> FleetResult:
    """Run one fleet for ``config.duration_s`` and measure it."""
    rng = random.Random(config.seed)
    urls = tuple(f"replica-{i}" for i in range(config.replicas))
    cameras = [
        _Camera(
            Uploads(
                UploadPolicy(UploadPolicyConfig(config.mode, config.max_in_flight, config.stride))
            ),
            EndpointPool(urls),
        )
        for _ in range(config.cameras)
    ]
    replicas = [_Replica() for _ in urls]
    result = FleetResult()
    events: list[tuple[float, int, str, Any]] = []
    order = itertools.count()
    requests: dict[int, dict[str, Any]] = {}
    request_ids = itertools.count()

    def at(t: float, kind: str, payload: Any) -> None:
        heapq.heappush(events, (t, next(order), kind, payload))

    def net() -> float:
        return max(0.0, config.net_delay_s + rng.gauss(0.0, config.net_jitter_s))

    def scored(t: float) -> bool:
        return t >= config.warm_up_s

    period = 1.0 / config.rate_hz
    for i in range(config.cameras):
        at(rng.uniform(0.0, period), "frame", i)

    def start_service(r: int, t: float, req: int) -> None:
        replica = replicas[r]
        replica.busy += 1
        service = rng.choice(config.service)
        requests[req].update(service=service, started=t, state="service", replica=r)
        if scored(t):
            result.queue_delays.append(t - requests[req]["arrived"])
        at(t + service, "done", (r, req))

    def free_slot(r: int, t: float, req: int) -> None:
        """A slot of replica ``r`` frees at ``t`` (``req`` done or aborted)."""
        replica = replicas[r]
        replica.busy -= 1
        if scored(t):  # the part of this service after the warm-up
            result.busy_slot_s += min(t - requests[req]["started"], t - config.warm_up_s)
        if replica.waiting:
            _, queued = replica.waiting.pop(0)
            start_service(r, t, queued)

    def abort(info: dict[str, Any], req: int, t: float) -> None:
        """The bridge gave up: a server drops the request (vLLM aborts a request whose
        client has gone), from its queue or from its slot."""
        if info.get("state") == "waiting":
            replicas[info["replica"]].waiting.remove((info["arrived"], req))
        elif info.get("state") == "service":
            free_slot(info["replica"], t, req)
        info["state"] = "aborted"

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if t > config.duration_s:
            break
        now = int(t * NS_PER_S)
        if kind == "frame":
            cam = cameras[payload]
            at(t + period, "frame", payload)
            if scored(t):
                result.frames += 1
                age = math.inf if cam.newest is None else t - cam.newest
                result.ages.append(age)
                result.no_context += age > config.delta_s
                tally = result.per_camera.setdefault(payload, [0, 0])
                tally[0] += 1
                tally[1] += age > config.delta_s
            if not cam.uploads.decide(now, now).upload:
                continue
            endpoint = cam.pool.choose(now)
            if endpoint is None:  # every replica busy or down: the client's "none usable"
                wait = cam.pool.next_usable_in(now)
                cam.uploads.on_outcome(now, now, RequestEnd.BUSY, retry_after_s=wait)
                continue
            cam.pool.started(endpoint)
            req = next(request_ids)
            requests[req] = {"camera": payload, "frame": t, "endpoint": endpoint}
            if scored(t):
                result.uploads += 1
            # the bridge gives up after its timeout, answered or not (a server still works
            # on what it abandoned: its slot stays taken)
            at(t + config.timeout_s, "timeout", req)
            if rng.random() >= config.loss:
                at(t + net(), "arrive", (urls.index(endpoint.url), req))
        elif kind == "arrive":
            r, req = payload
            info = requests[req]
            if info.get("settled"):
                continue  # the bridge gave up before it arrived
            info.update(arrived=t, replica=r)
            replica = replicas[r]
            if replica.busy < config.slots:
                start_service(r, t, req)
            elif config.queue < 0 or len(replica.waiting) < config.queue:
                replica.waiting.append((t, req))
                info["state"] = "waiting"
                result.max_waiting = max(result.max_waiting, len(replica.waiting))
            else:
                info["state"] = "refused"
                at(t + net(), "refused", req)
        elif kind == "done":
            r, req = payload
            if requests[req].get("state") != "service":
                continue  # aborted: its slot was freed then
            requests[req]["state"] = "done"
            free_slot(r, t, req)
            at(t + net(), "reply", req)
        elif kind in ("reply", "refused", "timeout"):
            found = requests.get(req := payload)
            if found is None or found.get("settled"):
                continue  # already timed out (or answered): the later event changes nothing
            info = found
            info["settled"] = True
            cam = cameras[info["camera"]]
            sent = int(info["frame"] * NS_PER_S)
            latency = t - info["frame"]
            if kind == "reply":
                cam.pool.succeeded(info["endpoint"])
                cam.uploads.on_outcome(sent, now, RequestEnd.ANSWERED, latency)
                if cam.newest is None or info["frame"] > cam.newest:
                    cam.newest = info["frame"]
                if scored(info["frame"]):
                    result.answered += 1
                    result.latencies.append(latency)
                    result.on_time += latency <= config.deadline_s
            elif kind == "refused":
                cam.pool.busy(info["endpoint"], now, config.retry_after_s, "429")
                cam.uploads.on_outcome(
                    sent, now, RequestEnd.BUSY, retry_after_s=config.retry_after_s
                )
                if scored(info["frame"]):
                    result.refused += 1
            else:
                abort(info, req, t)
                cam.pool.failed(info["endpoint"], now, "timeout", escalate=False)
                cam.uploads.on_outcome(sent, now, RequestEnd.TIMED_OUT, config.timeout_s)
                if scored(info["frame"]):
                    result.lost += 1
    result.capacity_slot_s = (
        config.replicas * config.slots * max(0.0, config.duration_s - config.warm_up_s)
    )
    return result


def lognormal(median: float, sigma: float, n: int = 2000, seed: int = 0) -> tuple[float, ...]:
    """``n`` draws of a log-normal service time with that median and log-space sigma."""
    rng = random.Random(seed)
    return tuple(median * math.exp(rng.gauss(0.0, sigma)) for _ in range(n))


MODES = (UploadMode.EVERY_FRAME, UploadMode.LATENCY_ADAPTIVE, UploadMode.FIXED_STRIDE)


def sweep(
    base: FleetConfig, per_replica: list[int]
) -> list[tuple[int, UploadMode, dict[str, float]]]:
    """Every policy at every number of cameras per replica."""
    rows = []
    for n in per_replica:
        for mode in MODES:
            config = FleetConfig(**{**base.__dict__, "cameras": n * base.replicas, "mode": mode})
            rows.append((n, mode, simulate(config).summary()))
    return rows


def table(rows: list[tuple[int, UploadMode, dict[str, float]]]) -> str:
    """The sweep as a Markdown table."""
    lines = [
        "| cameras / replica | policy | on-time LVLM share | uploads / frame | 429 share "
        "| LVLM latency (s) | context age p50 / p95 (s) | no context | utilisation "
        "| queue delay mean / p95 (s) | cameras starved |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, mode, s in rows:
        lines.append(
            f"| {n} | {mode.value} | {s['on_time_share']:.2f} | {s['upload_share']:.2f} "
            f"| {s['refused_share']:.2f} | {s['latency_mean_s']:.2f} "
            f"| {_age(s['context_age_p50_s'])} / {_age(s['context_age_p95_s'])} "
            f"| {s['no_context_share']:.2f} | {s['utilisation']:.2f} "
            f"| {s['queue_delay_mean_s']:.2f} / {s['queue_delay_p95_s']:.2f} "
            f"| {s['starved_share']:.0%} |"
        )
    return "\n".join(lines)


def _age(value: float) -> str:
    return "none" if math.isinf(value) else f"{value:.1f}"


def breaking_points(
    rows: list[tuple[int, UploadMode, dict[str, float]]], delta: float
) -> dict[str, str]:
    """Per policy: the smallest cameras-per-replica whose context age p95 passes delta."""
    out = {}
    for mode in MODES:
        mine = [(n, s) for n, m, s in rows if m is mode]
        over = [n for n, s in mine if s["context_age_p95_s"] > delta]
        out[mode.value] = (
            f"context age p95 passes delta = {delta:g} s at {min(over)} cameras per replica"
            if over
            else f"context age p95 stays within delta = {delta:g} s up to {mine[-1][0]} "
            "cameras per replica"
        )
    return out


def plot(rows: list[tuple[int, UploadMode, dict[str, float]]], path: Path, delta: float) -> None:
    """On-time share, context age, utilisation and queueing delay against cameras per
    replica, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("on_time_share", "on-time LVLM share"),
        ("context_age_p95_s", "context age p95 (s)"),
        ("utilisation", "server utilisation"),
        ("queue_delay_mean_s", "queueing delay mean (s)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for mode in MODES:
            xs = [n for n, m, _ in rows if m is mode]
            ys = [min(s[key], 3 * delta) for _, m, s in rows if m is mode]
            ax.plot(xs, ys, marker="o", label=mode.value)
        if key == "context_age_p95_s":
            ax.axhline(delta, color="grey", linestyle="--", label=f"delta {delta:g} s")
            ax.set_ylim(0, 3 * delta)  # "no context at all" (infinite) drawn at the top
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cameras per replica")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="spotvlm-fleet-sim", description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=1, help="S: LVLM replicas")
    p.add_argument("--slots", type=int, default=4, help="K: requests a replica serves at once")
    p.add_argument("--queue", type=int, default=-1, help="waiting requests per replica; 0: 429")
    p.add_argument("--cameras-per-replica", default="1,2,4,8,16,32")
    p.add_argument("--rate", type=float, default=FleetConfig.rate_hz, help="task rate [Hz]")
    p.add_argument("--deadline", type=float, default=FleetConfig.deadline_s, help="[s]")
    p.add_argument("--delta", type=float, default=FleetConfig.delta_s, help="context window [s]")
    p.add_argument("--service-trace", type=Path, help="file of measured service times [s]")
    p.add_argument("--service-median", type=float, default=2.0, help="[s] without a trace")
    p.add_argument("--service-sigma", type=float, default=0.5)
    p.add_argument("--net-delay", type=float, default=0.02, help="one way [s]")
    p.add_argument("--net-jitter", type=float, default=0.005, help="[s]")
    p.add_argument("--loss", type=float, default=0.0, help="request loss probability")
    p.add_argument("--timeout", type=float, default=10.0, help="bridge request timeout [s]")
    p.add_argument("--max-in-flight", type=int, default=2)
    p.add_argument("--retry-after", type=float, default=1.0, help="[s] sent with a 429")
    p.add_argument("--duration", type=float, default=300.0, help="simulated seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> FleetConfig:
    """The base fleet of the command line (cameras set per sweep point)."""
    if args.replicas < 1 or args.slots < 1 or args.rate <= 0 or not 0 <= args.loss < 1:
        raise SystemExit("need --replicas >= 1, --slots >= 1, --rate > 0, 0 <= --loss < 1")
    try:
        service = (
            read_trace(args.service_trace)
            if args.service_trace
            else lognormal(args.service_median, args.service_sigma, seed=args.seed)
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--service-trace: {exc}") from None
    return FleetConfig(
        rate_hz=args.rate,
        deadline_s=args.deadline,
        delta_s=args.delta,
        replicas=args.replicas,
        slots=args.slots,
        queue=args.queue,
        retry_after_s=args.retry_after,
        service=service,
        net_delay_s=args.net_delay,
        net_jitter_s=args.net_jitter,
        loss=args.loss,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        duration_s=args.duration,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    """Sweep the fleet size and print (and plot) the figures."""
    args = parse_args(argv)
    base = config_from(args)
    try:
        per_replica = [int(n) for n in args.cameras_per_replica.split(",")]
    except ValueError:
        raise SystemExit(f"--cameras-per-replica {args.cameras_per_replica!r}: numbers") from None
    rows = sweep(base, per_replica)
    print(table(rows))
    for mode, text in breaking_points(rows, args.delta).items():
        print(f"{mode}: {text}")
    if args.plot:
        plot(rows, args.plot, args.delta)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
