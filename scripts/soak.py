"""Chaos soak: the whole graph for N minutes at 2 Hz from a looping bag, with a cloud that is
slow, errs, hangs and replies garbage, and that is killed and restarted about every minute;
one node is SIGKILLed halfway (the launch file respawns it). It samples every process's
memory and CPU and prints: frames admitted, answers by source, invalid, lost (must be 0),
duplicates, LVLM outcomes, restarts, and each process's memory slope after warm-up.

    source env.sh && python scripts/soak.py --minutes 30          # writes docs/benchmarks.md
    python scripts/soak.py --minutes 3 --no-doc                    # a quick look

Not a unit test: it takes the minutes it is given. Exit status 1 when a frame was lost or
answered twice, or a process's memory grew faster than --max-slope MiB per 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotvlm_ros.tools.benchdoc import update_section  # noqa: E402
from test.helpers.graph import SHARED, Probe, node_processes, running_graph  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402
from test.helpers.servers import free_port, stop_process  # noqa: E402

NODES = ("camera_ingest", "svlm_node", "cloud_bridge", "context_manager", "bag_player")
SOURCES = {0: "invalid", 1: "svlm", 2: "lvlm"}
WARM_UP_S = 180.0  # memory slopes are fitted after this (model load, caches, allocator)


@dataclass
class Samples:
    """Memory and CPU of one process (one pid: a respawn starts a new series)."""

    name: str
    pid: int
    times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    anon_mib: list[float] = field(default_factory=list)
    shmem_mib: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def slope_per_10min(self, warm_up: float, values: list[float] | None = None) -> float | None:
        """Least-squares slope of ``values`` (default: private memory, RssAnon) over the
        samples from ``warm_up`` s after this process's first sample (a respawned one loads
        its model again) (MiB per 10 min)."""
        after = self.times[0] + warm_up
        values = self.anon_mib if values is None else values
        points = [(t, r) for t, r in zip(self.times, values, strict=True) if t >= after]
        if len(points) < 6:
            return None
        n = len(points)
        mt = sum(t for t, _ in points) / n
        mr = sum(r for _, r in points) / n
        var = sum((t - mt) ** 2 for t, _ in points)
        if var == 0:
            return None
        return sum((t - mt) * (r - mr) for t, r in points) / var * 600.0


def sample(pid: int) -> tuple[float, float, float, float] | None:
    """(RSS, its private part RssAnon, its shared-memory part RssShmem (MiB), user+system
    CPU s) of a process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    kib = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "RssAnon", "RssShmem"))
    }
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    return kib["VmRSS"] / 1024, kib["RssAnon"] / 1024, kib["RssShmem"] / 1024, cpu


class ChaosServer:
    """The local LVLM server with injected faults, killed and restarted on demand."""

    def __init__(self, port: int, log_dir: Path, seed: int) -> None:
        self.port, self.log_dir, self.seed = port, log_dir, seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        log = open(self.log_dir / f"lvlm_server-{self.restarts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "spotvlm_ros.cloud.server", "--port", str(self.port)),
                *("--latency-model", "lognormal", "--latency", "2.0", "--latency-sigma", "0.6"),
                *("--error-rate", "0.05", "--hang-rate", "0.03", "--hang-seconds", "30"),
                *("--malformed-rate", "0.05", "--empty-rate", "0.02"),
                *("--seed", str(self.seed + self.restarts), "--log-level", "warning"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.restarts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout=10.0)


def make_bag(path: Path) -> None:
    """60 CamVid frames at 2 Hz (30 s), played in a loop."""
    from spotvlm_ros.data.bag import main as make

    if not (path / "metadata.yaml").is_file():
        camvid = str(SHARED / "data" / "camvid_seq05vd")
        args = ["camvid", camvid, str(path), "--limit", "60", "--rate", "2", "--overwrite"]
        if make(args) != 0:
            raise SystemExit("soak: could not make the bag")


def run(args: argparse.Namespace) -> dict:
    """The soak; returns its figures."""
    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import stamp_of

    out = ROOT / "log" / "soak"
    out.mkdir(parents=True, exist_ok=True)
    bag = ROOT / "build" / "soak-bag"
    make_bag(bag)
    port = free_port()
    server = ChaosServer(port, out, args.seed)
    rng = random.Random(args.seed)
    duration = args.minutes * 60.0
    series: dict[int, Samples] = {}
    with ExitStack() as stack:
        server.start()
        stack.callback(server.stop)
        runner = stack.enter_context(
            running_graph(
                out / "graph",
                *("--model-path", str(tiny_model_dir()), "--no-check-lvlm"),
                *("--base-url", f"http://127.0.0.1:{port}/v1", "--bag", str(bag)),
                *("--set", "bag_player.loop=true", "--set", "svlm_node.max_new_tokens=8"),
                *("--deadline", "1.0", "--duration", str(duration + 120)),
            )
        )
        probe = Probe("soak_probe", overlays=False, camera=False)
        stack.callback(probe.close)
        admitted: list[int] = []
        on_frame = lambda f: admitted.append(stamp_of(f.header.stamp))  # noqa: E731
        probe.node.create_subscription(Frame, "/spotvlm/frame", on_frame, qos.RESULTS)
        probe.wait_for(lambda: len(admitted) > 0, 180.0, "the first admitted frame")
        start = time.monotonic()
        next_server_kill = start + rng.uniform(45, 75)
        server_down_until = 0.0
        node_killed = False
        node_restarts = 0
        while (now := time.monotonic()) - start < duration:
            t = now - start
            for name in NODES:
                for pid in node_processes(runner.pid, name):
                    got = sample(pid)
                    if got is None:
                        continue
                    s = series.setdefault(pid, Samples(name, pid))
                    s.times.append(t)
                    s.rss_mib.append(got[0])
                    s.anon_mib.append(got[1])
                    s.shmem_mib.append(got[2])
                    s.cpu_s.append(got[3])
            if server_down_until and now >= server_down_until:
                server.start()
                server_down_until = 0.0
            elif not server_down_until and now >= next_server_kill:
                server.kill()
                server_down_until = now + rng.uniform(3, 10)
                next_server_kill = now + rng.uniform(45, 75)
            if not node_killed and t >= duration / 2:
                victim = node_processes(runner.pid, args.kill)
                if victim:
                    os.kill(victim[0], signal.SIGKILL)
                    node_killed, node_restarts = True, 1
                    print(f"[{t:6.0f} s] SIGKILL {args.kill} (pid {victim[0]})", flush=True)
            if int(t) % 60 < args.sample_s:
                print(
                    f"[{t:6.0f} s] admitted {len(admitted)}, answers {len(probe.answers)}, "
                    f"server restarts {server.restarts - 1}",
                    flush=True,
                )
            time.sleep(args.sample_s)
        # stop feeding frames, let the last ones be decided, then count
        for pid in node_processes(runner.pid, "bag_player"):
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)
        answered = Counter(stamp_of(a.header.stamp) for a in probe.answers)
        by_source = Counter(SOURCES[a.source] for a in probe.answers)
        lvlm = Counter(
            "ok" if r.status == 0 else (r.error.split(":")[0] or "error") for r in probe.lvlm
        )
        for pid in node_processes(runner.pid, "bag_player"):
            os.kill(pid, signal.SIGCONT)
    seen = set(admitted)
    return {
        "minutes": args.minutes,
        "admitted": len(seen),
        "answers": sum(answered[s] for s in seen),
        "by_source": dict(by_source),
        "lost": len([s for s in seen if answered[s] == 0]),
        "duplicates": len([s for s in seen if answered[s] > 1]),
        "lvlm": dict(lvlm),
        "server_restarts": server.restarts - 1,
        "node_restarts": node_restarts,
        "killed": args.kill,
        "series": list(series.values()),
        "duration": duration,
    }


def report(figures: dict, args: argparse.Namespace) -> str:
    """The Markdown section."""
    rows = []
    for s in sorted(figures["series"], key=lambda s: (s.name, s.times[0])):
        slope = s.slope_per_10min(WARM_UP_S)
        cpu = (s.cpu_s[-1] - s.cpu_s[0]) / max(1e-9, s.times[-1] - s.times[0])
        rows.append(
            f"| {s.name} (pid {s.pid}) | {s.times[0]:.0f}-{s.times[-1]:.0f} | "
            f"{s.rss_mib[0]:.0f} -> {s.rss_mib[-1]:.0f} | "
            + (f"{slope:+.2f}" if slope is not None else "n/a")
            + f" | {cpu * 100:.1f} % |"
        )
    return f"""## Chaos soak ({figures["minutes"]:g} min at 2 Hz)

`source env.sh && python scripts/soak.py --minutes {args.minutes:g}` on {platform.node()}
({os.cpu_count()} cores): the tiny random SVLM, the local LVLM server with log-normal latency
(median 2 s, sigma 0.6) and 5 % errors, 3 % hangs (30 s), 5 % garbage, 2 % empty replies,
killed and restarted every 45-75 s (down 3-10 s); `{figures["killed"]}` SIGKILLed halfway
and respawned by the launch file. A 60-frame CamVid bag loops.

| figure | value |
|---|---|
| frames admitted | {figures["admitted"]} |
| final answers to them | {figures["answers"]} (by source {figures["by_source"]}) |
| lost (admitted, never answered) | {figures["lost"]} |
| answered twice | {figures["duplicates"]} |
| LVLM outcomes | {figures["lvlm"]} |
| LVLM server restarts | {figures["server_restarts"]} |
| node restarts | {figures["node_restarts"]} ({figures["killed"]}) |

Memory per process (RSS at first and last sample; slope fitted from {WARM_UP_S:.0f} s after
the process's first sample, target under 1 MiB per 10 min) and CPU share of one core:

| process | sampled (s) | RSS (MiB) | slope (MiB / 10 min) | CPU |
|---|---|---|---|---|
""" + "\n".join(rows)


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    # not context_manager: it holds the pending decisions, so its frames in flight are lost
    killable = ("svlm_node", "cloud_bridge", "camera_ingest")
    p.add_argument("--kill", default="svlm_node", choices=killable, help="node killed halfway")
    p.add_argument("--sample-s", type=float, default=10.0, help="sampling period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-slope", type=float, default=1.0, help="MiB per 10 min")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    figures = run(args)
    text = report(figures, args)
    print(text)
    with open(ROOT / "log" / "soak" / "samples.csv", "w") as raw:  # for a second look
        raw.write("name,pid,t_s,rss_mib,anon_mib,shmem_mib,cpu_s\n")
        for s in figures["series"]:
            for row in zip(s.times, s.rss_mib, s.anon_mib, s.shmem_mib, s.cpu_s, strict=True):
                raw.write(
                    f"{s.name},{s.pid},{row[0]:.1f}," + ",".join(f"{x:.2f}" for x in row[1:]) + "\n"
                )
    if not args.no_doc:
        update_section(ROOT / "docs" / "benchmarks.md", "soak", text)
    slopes = [
        s.slope_per_10min(WARM_UP_S)
        for s in figures["series"]
        if s.times[-1] - s.times[0] > figures["duration"] / 3
    ]
    too_fast = [x for x in slopes if x is not None and x > args.max_slope]
    return 1 if figures["lost"] or figures["duplicates"] or too_fast else 0


if __name__ == "__main__":
    sys.exit(main())
