"""What a crashed subscriber costs the publisher's memory: camera_ingest's private memory
(RssAnon) while a subscriber of its frames is restarted again and again, killed (SIGKILL,
as a crash) in one run and stopped cleanly (SIGINT) in the other, side by side.

    source env.sh && python scripts/bench_memory_restarts.py      # writes docs/benchmarks.md
    python scripts/bench_memory_restarts.py --restarts 3 --no-doc # a quick look

Why: the chaos soak's long-lived processes grow in steps right after a node is killed. A
reader that dies without saying goodbye stays matched until its lease runs out, so the
reliable frame writer keeps up to its history depth of unacknowledged frames for it; the
writer's payload pool grows to hold them and keeps that size for later reuse. This measures
whether that is a one-time high-water mark (bounded: history depth x frame size) or a leak
(every crash costs more).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotvlm_ros.tools.benchdoc import update_section  # noqa: E402
from test.helpers.graph import real_frames  # noqa: E402


def private_mib(pid: int) -> float:
    """RssAnon of a process (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no RssAnon for pid {pid}")


def listen(name: str) -> None:
    """A subscriber of the frames named ``name``, until killed or interrupted."""
    import rclpy

    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros import qos

    rclpy.init()
    node = rclpy.create_node(name)
    node.create_subscription(Frame, "/spotvlm/frame", lambda _: None, qos.RESULTS)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def one_run(stop: signal.Signals, restarts: int, period: float) -> list[float]:
    """camera_ingest's private memory before each restart of a listener (and at the end)."""
    import rclpy
    from sensor_msgs.msg import Image

    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import rgb_to_image

    def listener(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, __file__, "--listen", name])

    ingest = subprocess.Popen(
        [
            *(sys.executable, "-m", "spotvlm_ros.nodes.camera_ingest", "--ros-args"),
            *("-p", "max_age_s:=0.0", "-p", "frame_listeners:=[svlm_node,context_manager]"),
            *("--log-level", "warn"),
        ]
    )
    steady = listener("context_manager")  # never restarted
    victim = listener("svlm_node")
    rclpy.init()
    node = rclpy.create_node("bench_memory_camera")
    camera = node.create_publisher(Image, "/camera/image_raw", qos.CAMERA)
    image = rgb_to_image(real_frames(1)[0], "bgr8")  # a CamVid frame, 960 x 720
    samples = []
    try:
        start = time.monotonic()
        for _ in range(restarts + 1):
            until = start + period * (len(samples) + 1)
            while time.monotonic() < until:  # a 10 Hz camera (camera_ingest admits 2 Hz)
                image.header.stamp = node.get_clock().now().to_msg()
                camera.publish(image)
                time.sleep(0.1)
            samples.append(private_mib(ingest.pid))
            victim.send_signal(stop)
            victim.wait()
            victim = listener("svlm_node")
    finally:
        for proc in (victim, steady, ingest):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    return samples


def report(runs: dict[str, list[float]], args: argparse.Namespace) -> str:
    """The Markdown section."""
    lines = [
        "## Memory cost of a crashed subscriber",
        "",
        f"`source env.sh && python scripts/bench_memory_restarts.py --restarts {args.restarts}` "
        f"on {platform.node()} ({os.cpu_count()} cores). camera_ingest admits a 10 Hz "
        "camera (one CamVid frame, 960 x 720 bgr8, about 2 MB) at 2 Hz; one subscriber of its "
        f"frames is stopped and started again every {args.period:g} s, {args.restarts} times, "
        "killed in one run and interrupted (clean exit) in the other. camera_ingest's private "
        "memory (RssAnon, MiB) just before each stop:",
        "",
        "| run | " + " | ".join(f"stop {i + 1}" for i in range(args.restarts)) + " | end |",
        "|---|" + "---|" * (args.restarts + 1),
    ]
    for name, samples in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{x:.1f}" for x in samples) + " |")
    lines.append("")
    for name, samples in runs.items():
        first = samples[1] - samples[0]
        later = samples[-1] - samples[1]
        lines.append(
            f"- {name}: {first:+.1f} MiB after the first stop, {later:+.1f} MiB over the "
            f"{args.restarts - 1} stops after it"
        )
    lines += ["", EXPLANATION]
    return "\n".join(lines)


EXPLANATION = textwrap.fill(
    "A killed subscriber stays matched until its lease runs out; meanwhile the reliable frame "
    "writer keeps unacknowledged frames for it (up to its history depth) and its buffers keep "
    "that size for reuse: a high-water mark, reached at the first crash and reused at the next "
    "ones. A subscriber that falls behind under load raises it the same way.",
    92,
)


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--period", type=float, default=30.0, help="seconds between stops")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--listen", metavar="NAME", help=argparse.SUPPRESS)  # the listener process
    args = p.parse_args()
    if args.listen:
        listen(args.listen)
        return 0
    if args.restarts < 2:
        p.error("--restarts must be at least 2")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    from spotvlm_ros.ros.distro import localhost_discovery

    localhost_discovery()
    runs = {}
    for name, stop in (("SIGKILL (crash)", signal.SIGKILL), ("SIGINT (clean)", signal.SIGINT)):
        runs[name] = one_run(stop, args.restarts, args.period)
        print(f"{name}: {[round(x, 1) for x in runs[name]]}", flush=True)
    text = report(runs, args)
    print(text)
    if not args.no_doc:
        update_section(ROOT / "docs" / "benchmarks.md", "memory-restarts", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
