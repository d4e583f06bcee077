"""The graph's own cost at 2 Hz with 1600x900 frames over real DDS.

Three runs, side by side, each node its own process, frames published from this process:

1. edge: camera_ingest, svlm_node (tiny random model) and context_manager; every answer is
   decided as soon as the SVLM result is in. Overhead per frame = answer arrival here -
   frame stamp - the SVLM's inference time.
2. the same with rclpy's MultiThreadedExecutor in every node (SPOTVLM_EXECUTOR=multi), the
   executor the nodes used before; for the ratio.
3. cloud: the whole graph (plus cloud_bridge) against the local LVLM server answering after
   0.3 s, so that the final answers come from the LVLM. Overhead = answer arrival - frame
   stamp - the LVLM request's round trip.

Also the CPU share of each process.

    source env.sh && python scripts/bench_graph.py [--frames 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotvlm_ros.tools.benchdoc import percentile, update_section  # noqa: E402
from test.helpers.graph import Probe, node_processes, real_frames, running_graph  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402
from test.helpers.servers import lvlm_server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SOURCE_SVLM, SOURCE_LVLM = 1, 2
CLOUD_LATENCY_S = 0.3


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Run:
    """One configuration's results."""

    name: str
    overheads: list[float] = field(default_factory=list)  # s, per answered frame
    published: int = 0
    by_source: dict[int, int] = field(default_factory=dict)
    dropped: int = 0
    cpu_share: dict[str, float] = field(default_factory=dict)

    def p(self, q: float) -> float:
        """The q quantile of the overhead (ms)."""
        return percentile(self.overheads, q) * 1000 if self.overheads else float("nan")


def run(name: str, frames: list, args: argparse.Namespace, executor: str, cloud: bool) -> Run:
    """Start the graph, publish the frames at 2 Hz, and measure every frame."""
    from spotvlm_ros.ros.convert import stamp_of

    os.environ["SPOTVLM_EXECUTOR"] = executor  # inherited by the node processes
    result = Run(name)
    with ExitStack() as stack:
        graph_args = [
            "--model-path",
            str(tiny_model_dir()),
            "--set",
            "svlm_node.max_new_tokens=8",
            "--set",
            f"svlm_node.torch_threads={args.torch_threads}",
        ]
        if cloud:
            url = stack.enter_context(lvlm_server("--latency", str(CLOUD_LATENCY_S)))
            graph_args += ["--base-url", url]
        else:
            graph_args += ["--no-cloud"]
        runner = stack.enter_context(
            running_graph(ROOT / "log" / "bench-graph" / name, *graph_args)
        )
        probe = Probe(f"bench_probe_{name}", overlays=False)
        stack.callback(probe.close)
        probe.wait_for_graph(timeout=120.0, frame_listeners=3 if cloud else 2)
        probe.publish_at_rate(frames[:4], 2.0)  # warm-up
        time.sleep(2.0)
        names = ["camera_ingest", "svlm_node", "context_manager"] + ["cloud_bridge"] * cloud
        pids = {n: node_processes(runner.pid, n)[0] for n in names}
        before = {n: cpu_seconds(pid) for n, pid in pids.items()}
        start = time.monotonic()
        stamps = probe.publish_at_rate([frames[i % len(frames)] for i in range(args.frames)], 2.0)
        arrivals = probe.answer_arrivals
        probe.wait_for(lambda: all(s in arrivals for s in stamps), 30, "every answer")
        wall = time.monotonic() - start
        result.cpu_share = {n: (cpu_seconds(pid) - before[n]) / wall for n, pid in pids.items()}
        if cloud:
            probe.wait_for(lambda: len(probe.lvlm) >= len(stamps), 10, "every LVLM result")
    svlm = {stamp_of(r.header.stamp): r for r in probe.svlm}
    lvlm = {stamp_of(r.header.stamp): r for r in probe.lvlm}
    answers = {stamp_of(a.header.stamp): a for a in probe.answers}
    result.published = len(stamps)
    for stamp in stamps:
        answer = answers[stamp]
        result.by_source[answer.source] = result.by_source.get(answer.source, 0) + 1
        total = (arrivals[stamp] - stamp) / 1e9
        own = None
        if answer.source == SOURCE_SVLM and stamp in svlm:
            own = svlm[stamp].inference_latency
        elif answer.source == SOURCE_LVLM and stamp in lvlm:
            own = lvlm[stamp].latency
        if args.per_frame:
            line = f"{name:>6} {total * 1000:7.1f} ms  source {answer.source}"
            if own is not None:
                line += f"  model {own * 1000:6.1f} ms"
            if answer.source == SOURCE_LVLM and stamp in lvlm:
                replied = stamp_of(lvlm[stamp].receive_time)
                before = (replied - stamp) / 1e9 - lvlm[stamp].latency
                line += f"  before request {before * 1000:5.1f} ms"
                line += f"  after reply {(arrivals[stamp] - replied) / 1e6:5.1f} ms"
            print(line)
        if own is not None:
            result.overheads.append(total - own)
    result.dropped = sum(1 for s in stamps if s in svlm and svlm[s].status == 1)
    return result


class BenchProbe:
    """A plain rclpy node in this process: publishes images, records what comes back, and
    asks a node's parameter service."""

    def __init__(self, name: str, answers: str, answer_type: type) -> None:
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from spotvlm_ros.ros import qos

        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node(name)
        self.publishers: dict[str, object] = {}
        self.image_type = Image
        self.arrivals: dict[int, tuple[int, str]] = {}  # stamp -> (arrival ns, how)
        self.node.create_subscription(answer_type, answers, self._on_answer, qos.RESULTS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_answer(self, msg: object) -> None:
        from spotvlm_ros.ros.convert import stamp_of

        header = getattr(msg, "header", msg)
        how = getattr(header, "frame_id", "")
        now = self.node.get_clock().now().nanoseconds
        self.arrivals.setdefault(stamp_of(header.stamp), (now, how))  # type: ignore[attr-defined]

    def publish(self, topic: str, bgr: object) -> int:
        from spotvlm_ros.ros import qos

        if topic not in self.publishers:
            # as a camera driver publishes (the patterns' subscriptions take it: keep last 10)
            camera_qos = qos.CAMERA if topic.startswith("/bare/") else 10
            self.publishers[topic] = self.node.create_publisher(self.image_type, topic, camera_qos)
        height, width = bgr.shape[:2]  # type: ignore[attr-defined]
        now = self.node.get_clock().now()
        msg = self.image_type(height=height, width=width, encoding="bgr8", step=width * 3)
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = "camera"
        msg.data = bgr.tobytes()  # type: ignore[attr-defined]
        self.publishers[topic].publish(msg)  # type: ignore[attr-defined]
        return int(now.nanoseconds)

    def publish_at(self, topic: str, frames: list, hz: float) -> list[int]:
        stamps: list[int] = []
        start = time.monotonic()
        for i, frame in enumerate(frames):
            time.sleep(max(0.0, start + i / hz - time.monotonic()))
            stamps.append(self.publish(topic, frame))
        return stamps

    def parameter_latencies(self, service: str, stop: object) -> list[float]:
        """Ask ``service`` (GetParameters) every 0.25 s until ``stop`` is set; each call's
        round trip (s), 5 s at most."""
        from rcl_interfaces.srv import GetParameters

        client = self.node.create_client(GetParameters, service)
        client.wait_for_service(timeout_sec=10.0)
        seconds: list[float] = []
        while not stop.is_set():  # type: ignore[attr-defined]
            started = time.monotonic()
            future = client.call_async(GetParameters.Request(names=["probe"]))
            while not future.done() and time.monotonic() - started < 5.0:
                time.sleep(0.002)
            seconds.append(time.monotonic() - started)
            time.sleep(0.25)
        return seconds

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def start_process(log: Path, *args: str) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "wb")  # noqa: SIM115 - the process holds it until it ends
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench_nodes.py"), *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        cwd=ROOT,
    )


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.send_signal(signal.SIGINT)
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bare(frames: list, args: argparse.Namespace) -> Run:
    """The bare limit: three plain rclpy relays carry the graph's data path (four DDS hops:
    camera -> camera_ingest (image) -> svlm_node (image) -> context_manager (a header, as
    the SVLM's result) -> answer (a header)), with no graph logic."""
    from std_msgs.msg import Header

    hops = ["/bare/in", "/bare/a", "/bare/b", "/bare/out"]
    kinds = ["image-image", "image-header", "header-header"]
    log = ROOT / "log" / "bench-graph" / "bare"
    relays = [
        start_process(log / f"relay{i}.log", "relay", hops[i], hops[i + 1], "--kinds", kinds[i])
        for i in range(3)
    ]
    result = Run("bare")
    probe = BenchProbe("bench_bare", hops[-1], Header)
    try:
        deadline = time.monotonic() + 60
        while not probe.arrivals and time.monotonic() < deadline:  # until the chain is up
            probe.publish(hops[0], frames[0])
            time.sleep(0.5)
        probe.publish_at(hops[0], frames[:4], 2.0)
        time.sleep(1.0)
        stamps = probe.publish_at(
            hops[0], [frames[i % len(frames)] for i in range(args.frames)], 2.0
        )
        end = time.monotonic() + 10
        while not all(s in probe.arrivals for s in stamps) and time.monotonic() < end:
            time.sleep(0.05)
        result.published = len(stamps)
        result.overheads = [(probe.arrivals[s][0] - s) / 1e9 for s in stamps if s in probe.arrivals]
    finally:
        probe.close()
        stop_processes(relays)
    return result


@dataclass
class PatternRun:
    """One scheduling pattern's results."""

    name: str
    published: int = 0
    answered: int = 0
    dropped: int = 0
    lost: int = 0  # never ended: overwritten in a subscription queue
    staleness: list[float] = field(default_factory=list)  # s, answer time - frame stamp
    parameter_s: list[float] = field(default_factory=list)  # parameter service round trips


def scheduling(name: str, frames: list, args: argparse.Namespace) -> PatternRun:
    """One pattern's process, frames at 2 Hz, its parameter service asked meanwhile."""
    import threading

    from std_msgs.msg import Header

    log = ROOT / "log" / "bench-graph" / f"pattern-{name}.log"
    proc = start_process(log, "pattern", name, "--hold", str(args.hold))
    probe = BenchProbe(f"bench_probe_{name}", "/bench/answer", Header)
    result = PatternRun(name)
    try:
        deadline = time.monotonic() + 120
        while not probe.arrivals:  # the model is loaded and answers
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"pattern {name} did not answer: {log}")
            probe.publish("/camera/image_raw", frames[0])
            time.sleep(args.hold + 0.5)
        time.sleep(3 * args.hold)  # whatever is still queued ends
        probe.arrivals.clear()
        stop = threading.Event()
        latencies: list[float] = []
        asker = threading.Thread(
            target=lambda: latencies.extend(
                probe.parameter_latencies("/bench_pattern/get_parameters", stop)
            ),
            daemon=True,
        )
        asker.start()
        stamps = probe.publish_at(
            "/camera/image_raw", [frames[i % len(frames)] for i in range(args.pattern_frames)], 2.0
        )
        # every frame ends, or nothing more comes for a while (a queue overwrote it)
        last, seen = time.monotonic(), 0
        while time.monotonic() - last < 4 * args.hold + 2:
            ended = sum(1 for s in stamps if s in probe.arrivals)
            if ended == len(stamps):
                break
            if ended != seen:
                last, seen = time.monotonic(), ended
            time.sleep(0.05)
        stop.set()
        asker.join(timeout=10)
        result.published = len(stamps)
        for s in stamps:
            if s not in probe.arrivals:
                result.lost += 1
                continue
            arrival, how = probe.arrivals[s]
            if how == "answered":
                result.answered += 1
                result.staleness.append((arrival - s) / 1e9)
            else:
                result.dropped += 1
        result.parameter_s = latencies
    finally:
        probe.close()
        stop_processes([proc])
    return result


def limit_and_patterns(
    edge: Run, bare_run: Run, patterns: list[PatternRun], args: argparse.Namespace
) -> str:
    """The Markdown for the bare limit and the scheduling patterns."""

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f}" if values else "-"

    def s(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.2f}" if values else "-"

    rows = "\n".join(
        f"| {p.name} | {p.answered} | {p.dropped} | {p.lost} | {s(p.staleness, 0.5)} | "
        f"{s(p.staleness, 0.95)} | {ms(p.parameter_s, 0.5)} | {ms(p.parameter_s, 0.95)} | "
        f"{ms(p.parameter_s, 1.0)} |"
        for p in patterns
    )
    ratio50 = edge.p(0.5) / bare_run.p(0.5) if bare_run.overheads else float("nan")
    ratio95 = edge.p(0.95) / bare_run.p(0.95) if bare_run.overheads else float("nan")
    return (
        "### Against the bare limit\n\n"
        "**bare**: three plain rclpy processes (`scripts/bench_nodes.py relay`) pass the same "
        "1600x900 image along the graph's data path, four DDS hops: camera -> relay 1 (the "
        "image, as to camera_ingest) -> relay 2 (the image, as to svlm_node) -> relay 3 (its "
        "header only, as svlm_node's result to context_manager) -> answer (the header), with "
        "no logic at all: its time per frame is transport and rclpy's message conversion "
        "alone. The graph's figure is its overhead (less the SVLM's inference), as above.\n\n"
        "| run | frames measured | p50 (ms) | p95 (ms) |\n|---|---|---|---|\n"
        f"| bare | {len(bare_run.overheads)} of {bare_run.published} | {bare_run.p(0.5):.1f} "
        f"| {bare_run.p(0.95):.1f} |\n"
        f"| edge (the graph, less the SVLM's time) | {len(edge.overheads)} of "
        f"{edge.published} | {edge.p(0.5):.1f} | {edge.p(0.95):.1f} |\n\n"
        f"Graph overhead / bare limit: p50 {ratio50:.1f}x, p95 {ratio95:.1f}x.\n\n"
        "### The field's scheduling patterns on a slow model\n\n"
        f"The tiny random Qwen2.5-VL held to {args.hold} s per frame (inference, then a sleep "
        f"to {args.hold} s), {args.pattern_frames} frames (1600x900) at 2 Hz, each pattern its "
        "own process (`scripts/bench_nodes.py pattern NAME`) with the same subscription "
        "(keep last 10, reliable); the parameter service (`get_parameters`) asked every "
        "0.25 s during the run:\n\n"
        "- **callback**: inference inside the image callback (ros2_nanollm, ROS2-NanoOWL);\n"
        "- **refuse**: a queue of one that refuses new frames while busy (detection_vlm);\n"
        "- **latest**: this package's (core.worker.LatestWorker, as svlm_node): the newest "
        "frame waits, a superseded one is answered as dropped.\n\n"
        "| pattern | answered | answered as dropped | never answered | staleness p50 (s) "
        "| p95 (s) | parameter service p50 (ms) | p95 (ms) | max (ms) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        'Staleness = answer received - frame stamp. "never answered": frames that ended '
        "neither way (overwritten in the subscription's queue, or still queued when the run "
        "ended).\n"
    )


def report(runs: list[Run], args: argparse.Namespace, extra: str = "") -> str:
    """The Markdown section."""
    edge, multi, cloud = runs
    rows = "\n".join(
        f"| {r.name} | {len(r.overheads)} of {r.published} | {r.p(0.5):.1f} | {r.p(0.95):.1f} "
        f"| {max(r.overheads) * 1000:.1f} | {r.dropped} |"
        for r in runs
    )
    names = sorted({n for r in runs for n in r.cpu_share})
    cpu = "\n".join(
        f"| {n} | "
        + " | ".join(f"{r.cpu_share[n] * 100:.1f} %" if n in r.cpu_share else "-" for r in runs)
        + " |"
        for n in names
    )
    return (
        "## Graph overhead at 2 Hz, 1600x900 frames, real DDS\n\n"
        f"Command: `source env.sh && python scripts/bench_graph.py --frames {args.frames} "
        f"--torch-threads {args.torch_threads} --hold {args.hold} --pattern-frames "
        f"{args.pattern_frames}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU threads. Each node is its own "
        "process; frames (1600x900 bgr8, 4.3 MB) are published at 2 Hz from the benchmark "
        "process through Fast DDS shared memory; svlm_node runs the tiny random Qwen2.5-VL "
        "(252 visual tokens, 8 new tokens).\n\n"
        "Overhead per frame = (final answer received) - (frame stamp, i.e. its publication) "
        "- (the answering model's own time: SVLM inference, or the LVLM request's round "
        "trip): DDS transport of the frame to camera_ingest and on to the nodes, of the "
        "results and of the answer, validation, image conversion, the wait for the SVLM "
        "worker, context and arbitration, all on one clock. It starts at publication, "
        "slightly before the arrival at camera_ingest, so it over-states the graph's cost.\n\n"
        "- **edge**: camera_ingest, svlm_node, context_manager (no cloud): answers from the "
        "SVLM.\n"
        "- **multi**: the same with rclpy's MultiThreadedExecutor in every node "
        "(`SPOTVLM_EXECUTOR=multi`; the nodes spin a SingleThreadedExecutor by default).\n"
        f"- **cloud**: the whole graph with cloud_bridge and the local LVLM server answering "
        f"after {CLOUD_LATENCY_S} s: answers from the LVLM (the SVLM runs on every frame "
        "as well).\n\n"
        "| run | frames measured | p50 (ms) | p95 (ms) | max (ms) | SVLM drops |\n"
        "|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Target: p95 < 30 ms. p95 ratio multi / edge: {multi.p(0.95) / edge.p(0.95):.1f}x; "
        f"answers by source (1 SVLM, 2 LVLM): edge {edge.by_source}, multi {multi.by_source}, "
        f"cloud {cloud.by_source}.\n\n"
        "| process | CPU share (of one core): edge | multi | cloud |\n|---|---|---|---|\n"
        f"{cpu}\n\n"
        "The multi-threaded executor's tail was the cause of the earlier misses: it took "
        "frames and results hundreds of milliseconds late on two shared cores (and made the "
        "SVLM drop frames it could have answered). `--per-frame` prints each frame.\n\n" + extra
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="svlm_node's torch threads (0: its default, one fewer than the cores)",
    )
    parser.add_argument("--per-frame", action="store_true", help="print every frame's timing")
    parser.add_argument("--hold", type=float, default=1.5, help="the slow model's s per frame")
    parser.add_argument("--pattern-frames", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    from spotvlm_ros.ros.distro import localhost_discovery

    localhost_discovery()
    from spotvlm_ros.ros.distro import chosen_profile, use_profile

    use_profile(chosen_profile() or str(ROOT / "config" / "fastdds.xml"))
    import cv2

    frames = [cv2.resize(f, (1600, 900)) for f in real_frames(12)]
    runs = [
        run("edge", frames, args, "single", cloud=False),
        run("multi", frames, args, "multi", cloud=False),
        run("cloud", frames, args, "single", cloud=True),
    ]
    bare_run = bare(frames, args)
    patterns = [scheduling(name, frames, args) for name in ("callback", "refuse", "latest")]
    text = report(runs, args, limit_and_patterns(runs[0], bare_run, patterns, args))
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", "graph", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
