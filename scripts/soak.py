"""Chaos soak: the whole graph for N minutes at 2 Hz from a looping bag, with a cloud that is
slow, errs, hangs and replies garbage, and that is killed and restarted about every minute;
svlm_node and context_manager are SIGKILLed once each (the launch file respawns them). It
samples every process's memory and CPU and prints: frames admitted, answers by source,
frames never answered (each must be one the respawned context_manager counted as lost),
duplicates, LVLM outcomes, restarts, and each process's memory slope after warm-up.

    source env.sh && python scripts/soak.py --minutes 30          # writes docs/benchmarks.md
    python scripts/soak.py --minutes 3 --no-doc                    # a quick look

Not a unit test: it takes the minutes it is given. Exit status 1 when a frame went
unanswered without being counted lost, or was answered twice, or a process's private memory
(RssAnon) grew faster than --max-slope MiB per 10 minutes.
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
from collections.abc import Sequence
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
# After a node is killed, its readers stay matched until their lease runs out, and the reliable
# writers keep unacknowledged messages for them meanwhile: the other processes' memory steps
# up once (see scripts/bench_memory_restarts.py). The drift fit leaves this long out.
SETTLE_S = 60.0


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

    def _fitted(self, warm_up: float, kills: list[float]) -> list[list[tuple[float, float]]]:
        """(time, private MiB) from ``warm_up`` s after this process's first sample (a
        respawned one loads its model again), in stretches split at the node kills, each
        without its first SETTLE_S."""
        stretches: dict[int, list[tuple[float, float]]] = {}
        for t, mib in zip(self.times, self.anon_mib, strict=True):
            before = [k for k in kills if k <= t]
            if t < self.times[0] + warm_up or (before and t < before[-1] + SETTLE_S):
                continue
            stretches.setdefault(len(before), []).append((t, mib))
        return list(stretches.values())

    def slope_per_10min(self, warm_up: float, kills: Sequence[float] = ()) -> float | None:
        """Least-squares slope of private memory (RssAnon), pooled over the stretches between
        node kills (MiB per 10 min): how fast it creeps while nothing crashes. Without
        ``kills``, one straight line through everything after the warm-up."""
        sxy = sxx = 0.0
        used = 0
        for points in self._fitted(warm_up, list(kills)):
            if len(points) < 3:
                continue
            mt = sum(t for t, _ in points) / len(points)
            mr = sum(r for _, r in points) / len(points)
            sxy += sum((t - mt) * (r - mr) for t, r in points)
            sxx += sum((t - mt) ** 2 for t, _ in points)
            used += len(points)
        return sxy / sxx * 600.0 if used >= 6 and sxx > 0 else None

    def steps_at_kills(self, kills: list[float]) -> float:
        """How much private memory rose across the kills this process lived through: from
        the last sample before each kill to the first after its SETTLE_S (MiB)."""
        total = 0.0
        for k in kills:
            before = [m for t, m in zip(self.times, self.anon_mib, strict=True) if t < k]
            after = [m for t, m in zip(self.times, self.anon_mib, strict=True) if t >= k + SETTLE_S]
            if before and after and self.times[0] + WARM_UP_S <= k:
                total += after[0] - before[-1]
        return total


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
        probe = Probe("soak_probe", overlays=False, camera=False, diagnostics=True)
        stack.callback(probe.close)
        admitted: list[int] = []
        on_frame = lambda f: admitted.append(stamp_of(f.header.stamp))  # noqa: E731
        probe.node.create_subscription(Frame, "/spotvlm/frame", on_frame, qos.RESULTS)
        probe.wait_for(lambda: len(admitted) > 0, 180.0, "the first admitted frame")
        start = time.monotonic()
        next_server_kill = start + rng.uniform(45, 75)
        server_down_until = 0.0
        kills = [  # (when, node): evenly spread over the run
            ((i + 1) * duration / (len(args.kill) + 1), name) for i, name in enumerate(args.kill)
        ]
        killed: list[str] = []
        kill_times: list[float] = []
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
            if kills and t >= kills[0][0]:
                name = kills.pop(0)[1]
                victim = node_processes(runner.pid, name)
                if victim:
                    os.kill(victim[0], signal.SIGKILL)
                    killed.append(name)
                    kill_times.append(t)
                    print(f"[{t:6.0f} s] SIGKILL {name} (pid {victim[0]})", flush=True)
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
        status = "context_manager: answers"  # a respawned one counts what its predecessor lost
        counted_lost = int(probe.diagnostic_value(status, "lost_frames") or 0)
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
        "killed": killed,
        "kill_times": kill_times,
        "counted_lost": counted_lost,
        "series": list(series.values()),
        "duration": duration,
    }


def report(figures: dict, args: argparse.Namespace) -> str:
    """The Markdown section."""
    kills = figures["kill_times"]
    rows = []
    for s in sorted(figures["series"], key=lambda s: (s.name, s.times[0])):
        overall, drift = s.slope_per_10min(WARM_UP_S), s.slope_per_10min(WARM_UP_S, kills)
        cpu = (s.cpu_s[-1] - s.cpu_s[0]) / max(1e-9, s.times[-1] - s.times[0])
        rows.append(
            f"| {s.name} (pid {s.pid}) | {s.times[0]:.0f}-{s.times[-1]:.0f} | "
            f"{s.rss_mib[0]:.0f} -> {s.rss_mib[-1]:.0f} | "
            f"{s.anon_mib[0]:.1f} -> {s.anon_mib[-1]:.1f} | {number(overall)} | "
            f"{number(drift)} | {s.steps_at_kills(kills):+.1f} | {cpu * 100:.1f} % |"
        )
    killed = ", ".join(f"`{name}`" for name in figures["killed"]) or "no node"
    at = ", ".join(f"{t:.0f} s" for t in kills)
    return f"""## Chaos soak ({figures["minutes"]:g} min at 2 Hz)

`source env.sh && python scripts/soak.py --minutes {args.minutes:g}` on {platform.node()}
({os.cpu_count()} cores): the tiny random SVLM, the local LVLM server with log-normal latency
(median 2 s, sigma 0.6) and 5 % errors, 3 % hangs (30 s), 5 % garbage, 2 % empty replies,
killed and restarted every 45-75 s (down 3-10 s); {killed} SIGKILLed (at {at}) and
respawned by the launch file. A 60-frame CamVid bag loops.

| figure | value |
|---|---|
| frames admitted | {figures["admitted"]} |
| final answers to them | {figures["answers"]} (by source {figures["by_source"]}) |
| admitted, never answered | {figures["lost"]} |
| of which counted lost by the respawned context_manager | {figures["counted_lost"]} |
| lost without a count | {figures["lost"] - figures["counted_lost"]} |
| answered twice | {figures["duplicates"]} |
| LVLM outcomes | {figures["lvlm"]} |
| LVLM server restarts | {figures["server_restarts"]} |
| node restarts | {len(figures["killed"])} ({killed}) |

Memory per process: RSS and its private part (RssAnon; the rest is mostly the 64 MiB Fast
DDS shared-memory segment and mapped code) at the first and last sample; private-memory
slopes from {WARM_UP_S:.0f} s after the process's first sample, as one line through
everything and as the drift between kills (pooled within the stretches between kills, each
without its first {SETTLE_S:.0f} s; target under {args.max_slope:g} MiB per 10 min); the step
across the kills the process lived through; CPU share of one core:

{HEADER}
""" + "\n".join(rows)


HEADER = (
    "| process | sampled (s) | RSS (MiB) | private (MiB) | slope, all (MiB / 10 min) "
    "| drift between kills (MiB / 10 min) | step at kills (MiB) | CPU |\n"
    "|---|---|---|---|---|---|---|---|"
)


def number(value: float | None) -> str:
    return f"{value:+.2f}" if value is not None else "n/a"


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    killable = ("svlm_node", "cloud_bridge", "camera_ingest", "context_manager")
    p.add_argument(
        "--kill",
        default="svlm_node,context_manager",
        type=lambda text: [name for name in text.split(",") if name],
        help=f"nodes SIGKILLed once each, spread over the run (comma list of {killable})",
    )
    p.add_argument("--sample-s", type=float, default=10.0, help="sampling period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-slope", type=float, default=1.0, help="MiB per 10 min")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args()
    if unknown := set(args.kill) - set(killable):
        p.error(f"--kill: {sorted(unknown)} not among {killable}")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    from spotvlm_ros.ros.distro import localhost_discovery

    localhost_discovery()
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
        s.slope_per_10min(WARM_UP_S, figures["kill_times"])
        for s in figures["series"]
        if s.times[-1] - s.times[0] > figures["duration"] / 3
    ]
    too_fast = [x for x in slopes if x is not None and x > args.max_slope]
    uncounted = figures["lost"] != figures["counted_lost"]
    return 1 if uncounted or figures["duplicates"] or too_fast else 0


if __name__ == "__main__":
    sys.exit(main())
