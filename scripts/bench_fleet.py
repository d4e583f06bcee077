"""The fleet simulation checked against a real multi-camera run, and its fleet-size sweep.

1. Measures the local LVLM server's service time: sequential requests (concurrency 1) to
   `spotvlm-lvlm-server` with the run's injected latency; the round trips are the trace.
2. Runs fleet.launch.py for real: C camera graphs under /<robot>/<camera>, the tiny SVLM,
   the local server serving ``--slots`` requests at once (429 + Retry-After beyond), every
   camera fed at 2 Hz for ``--seconds``; records every LVLM result.
3. Simulates the same fleet with spotvlm-fleet-sim's engine and that trace, and prints the
   measured and predicted figures side by side with their ratio, against a stated tolerance.
4. Sweeps cameras per replica for an emulated 72B-class server and plots it.

Writes the ``fleet`` section of docs/benchmarks.md and docs/fleet_sim.png.

    source env.sh && python scripts/bench_fleet.py [--cameras 3] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotvlm_ros.cloud.client import LvlmClient, LvlmClientConfig, OutcomeKind  # noqa: E402
from spotvlm_ros.core.policy import UploadMode  # noqa: E402
from spotvlm_ros.ros.distro import localhost_discovery  # noqa: E402
from spotvlm_ros.tools.benchdoc import update_section  # noqa: E402
from spotvlm_ros.tools.fleet_sim import (  # noqa: E402
    FleetConfig,
    breaking_points,
    lognormal,
    plot,
    simulate,
    sweep,
    table,
)
from test.helpers.fleet import FleetProbe  # noqa: E402
from test.helpers.graph import real_frames, stamp_of_msg  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402
from test.helpers.servers import free_port, lvlm_server, stop_process  # noqa: E402

DETECTOR = ROOT.parent / "shared" / "models" / "centernet_mobilenetv3_coco.onnx"
TOLERANCE = {"on_time_share": ("abs", 0.10), "latency_mean_s": ("rel", 0.25)}
STATUS_OK, STATUS_REJECTED = 0, 3


def service_trace(latency: float, n: int) -> list[float]:
    """Round trips of ``n`` sequential requests to the local server (its service time)."""
    frames = real_frames(4)

    async def run(url: str) -> list[float]:
        client = LvlmClient(LvlmClientConfig(base_url=url, model="detector", timeout=30.0))
        try:
            out = []
            for i in range(n):
                outcome = await client.ask(frames[i % len(frames)], "Which objects?")
                if outcome.kind is not OutcomeKind.OK:
                    raise SystemExit(f"service-time request failed: {outcome.error}")
                out.append(outcome.latency)
            return out
        finally:
            await client.close()

    args = ("--detector-model", str(DETECTOR), "--latency", str(latency))
    with lvlm_server(*args) as url:
        return asyncio.run(run(url))


def measure_fleet(args: argparse.Namespace) -> dict[str, float]:
    """The real run: fleet.launch.py, a probe feeding every camera, the LVLM results."""
    cameras = tuple(f"cam_{i}" for i in range(args.cameras))
    port = free_port()
    env = dict(os.environ)
    localhost_discovery(env)
    log = open(ROOT / "log" / "bench-fleet-launch.log", "wb")  # noqa: SIM115 - closed below
    launch = subprocess.Popen(
        [
            *("ros2", "launch", "spotvlm_ros", "fleet.launch.py"),
            "robot:=bench",
            f"cameras:={','.join(cameras)}",
            "camera_topic:=/{robot}/{camera}/image_raw",
            f"model_path:={tiny_model_dir()}",
            "start_server:=true",
            f"server_port:={port}",
            f"server_latency:={args.latency}",
            f"server_args:=--max-concurrency {args.slots} --retry-after 1",
            f"base_url:=http://127.0.0.1:{port}/v1",
            "lvlm_model:=detector",
            f"deadline:={args.deadline}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    probe = FleetProbe(
        {c: f"/bench/{c}" for c in cameras}, {c: f"/bench/{c}/image_raw" for c in cameras}
    )
    try:
        probe.wait_ready(timeout=300.0)
        frames = real_frames(8)
        probe.warm_up(frames[0], timeout=300.0)
        for c in cameras:
            probe.lvlm[c].clear()
        repeats = max(1, int(args.seconds * 2 / len(frames)))
        sent = probe.stream(frames * repeats, hz=2.0)
        svlm_rss = svlm_memory(launch.pid)
        time.sleep(args.deadline + 3.0)
    finally:
        probe.close()
        os.killpg(launch.pid, signal.SIGINT)
        stop_process(launch, signal.SIGINT, 30.0)
        log.close()
    n_frames = ok_on_time = uploads = refused = 0
    latencies = []
    for c in cameras:
        mine = set(sent[c])
        n_frames += len(mine)
        for r in probe.lvlm[c]:
            stamp = stamp_of_msg(r)
            if stamp not in mine:
                continue
            uploads += 1
            if r.status == STATUS_REJECTED and "429" in r.error:
                refused += 1
            if r.status == STATUS_OK:
                latencies.append(r.latency)
                arrival = r.receive_time.sec * 1e9 + r.receive_time.nanosec
                ok_on_time += (arrival - stamp) / 1e9 <= args.deadline
    return {
        "on_time_share": ok_on_time / n_frames,
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "upload_share": uploads / n_frames,
        "refused_share": refused / max(1, uploads),
        "frames": n_frames,
        "svlm_rss_mib": svlm_rss,
    }


def svlm_memory(root: int) -> list[float]:
    """Resident memory (MiB) of each svlm_node process under the launch."""
    import psutil

    sizes = []
    for child in psutil.Process(root).children(recursive=True):
        try:
            if "__node:=svlm_node" in child.cmdline():
                sizes.append(child.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            continue
    return sizes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--slots", type=int, default=2, help="the local server's concurrency")
    p.add_argument("--latency", type=float, default=0.6, help="its injected latency [s]")
    p.add_argument("--deadline", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--trace-requests", type=int, default=30)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    trace = service_trace(args.latency, args.trace_requests)
    trace_file = ROOT / "log" / "bench" / "fleet_service_times.txt"
    trace_file.parent.mkdir(parents=True, exist_ok=True)
    trace_file.write_text("".join(f"{t:.4f}\n" for t in trace))
    print(f"service time: median {statistics.median(trace):.3f} s over {len(trace)} requests")
    measured = measure_fleet(args)
    model = FleetConfig(
        cameras=args.cameras,
        rate_hz=2.0,
        deadline_s=args.deadline,
        replicas=1,
        slots=args.slots,
        queue=0,  # the local server answers 429 beyond its slots
        retry_after_s=1.0,
        service=tuple(trace),
        net_delay_s=0.0,  # the trace's round trips hold the loopback time already
        net_jitter_s=0.0,
        mode=UploadMode.LATENCY_ADAPTIVE,
        duration_s=600.0,
    )
    runs = [simulate(replace(model, seed=s)).summary() for s in range(5)]
    predicted = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
    rows, verdicts = [], []
    for key in ("on_time_share", "latency_mean_s", "upload_share", "refused_share"):
        m, s = measured[key], predicted[key]
        kind, bound = TOLERANCE.get(key, ("", 0.0))
        if kind == "abs":
            ok = abs(m - s) <= bound
            verdict = f"{'within' if ok else 'OUTSIDE'} +-{bound:.2f}"
        elif kind == "rel":
            ok = abs(m - s) <= bound * m
            verdict = f"{'within' if ok else 'OUTSIDE'} +-{bound:.0%}"
        else:
            ok, verdict = True, "(not a validated figure)"
        verdicts.append(ok)
        ratio = s / m if m else float("nan")
        rows.append(f"| {key} | {m:.3f} | {s:.3f} | {ratio:.2f} | {verdict} |")
    validation = "\n".join(
        [
            "| figure | measured | simulated | simulated / measured | tolerance |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(validation)
    rss = measured["svlm_rss_mib"]
    memory = (
        f"SVLM memory: {len(rss)} svlm_node processes (one per camera), "
        + ", ".join(f"{r:.0f}" for r in rss)
        + f" MiB resident each, {sum(rss):.0f} MiB in all (the tiny test model; a 3B in "
        "bfloat16 adds about 7.5 GB of weights per process, on the GPU)."
    )
    print(memory)

    base = FleetConfig(
        replicas=2,
        slots=4,
        queue=-1,
        deadline_s=1.0,
        delta_s=10.0,
        service=lognormal(2.0, 0.5),
        duration_s=300.0,
    )
    per_replica = [1, 2, 4, 8, 16, 32]
    swept = sweep(base, per_replica)
    figure = ROOT / "docs" / "fleet_sim.png"
    plot(swept, figure, base.delta_s)
    points = breaking_points(swept, base.delta_s)
    print(table(swept))
    body = (
        "## Fleet: many cameras sharing LVLM replicas\n\n"
        "Command: `source env.sh && python scripts/bench_fleet.py --cameras "
        f"{args.cameras} --slots {args.slots} --latency {args.latency} --seconds "
        f"{args.seconds:g}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU threads; everything on one "
        "machine over loopback.\n\n"
        "**Validation.** A real run of `fleet.launch.py`: "
        f"{args.cameras} camera graphs (the tiny SVLM), every camera at 2 Hz for "
        f"{args.seconds:g} s ({measured['frames']} frames), one local LVLM server serving "
        f"{args.slots} requests at once and answering 429 (Retry-After 1 s) beyond, "
        f"injected latency {args.latency} s, deadline {args.deadline} s. The simulation "
        "ran the same fleet (the bridges' own upload policy and endpoint code) with the "
        f"server's service time measured on this machine ({len(trace)} sequential requests, "
        f"median {statistics.median(trace):.3f} s), mean of 5 seeds of 600 s. *On-time "
        "share*: frames whose LVLM answer arrived within the deadline.\n\n"
        + validation
        + "\n\n"
        + memory
        + "\n\n**Sweep.** An emulated 72B-class serving engine: 2 replicas, 4 requests at "
        "once each with a FIFO queue behind (as vLLM queues), service time log-normal "
        "(median 2 s, sigma 0.5: the soak's emulated cloud, not a measured vLLM), deadline "
        "1 s, delta 10 s, 20 ms network. A trace from a real deployment goes in with "
        "`spotvlm-fleet-sim --service-trace FILE`.\n\n"
        + table(swept)
        + "\n\n"
        + "\n".join(f"- {mode}: {text}" for mode, text in points.items())
        + "\n\n![fleet simulation](fleet_sim.png)\n"
    )
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", "fleet", body)
        print("written to docs/benchmarks.md and docs/fleet_sim.png")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
