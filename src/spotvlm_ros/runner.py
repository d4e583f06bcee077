"""`spotvlm_ros`: start the whole graph as separate processes, without `ros2 launch`.

The same graph as launch/spotvlm.launch.py, for installs without the launch packages:
camera_ingest, svlm_node, cloud_bridge and context_manager, optionally the local LVLM
server, a bag player and the evaluator. Each node reads config/<node>.yaml and the
overrides given here. Ctrl-C stops everything; with --bag the graph stops by itself
once the bag has played.

    spotvlm_ros --model-path /models/Qwen2.5-VL-3B-Instruct --base-url http://gpu:8000/v1
    spotvlm_ros --model-path build/test-models/tiny --start-server --bag rosbags/demo --evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NODES = ("camera_ingest", "svlm_node", "cloud_bridge", "context_manager")


def config_dir() -> Path:
    """The installed config folder (share/spotvlm_ros/config), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("spotvlm_ros")) / "config"
        if installed.is_dir():
            return installed
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parents[2] / "config"


def ros_value(value: Any) -> str:
    """A parameter value as rcl parses it (YAML; JSON is valid YAML)."""
    return json.dumps(value)


@dataclass
class Managed:
    """A child process of the runner."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None = None
    critical: bool = True


@dataclass
class Graph:
    """The processes of one run."""

    log_dir: Path | None
    children: list[Managed] = field(default_factory=list)

    def start(self, name: str, argv: list[str], critical: bool = True) -> Managed:
        """Start one process; its output goes to log_dir/<name>.log or to this terminal."""
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT if log else None)
        child = Managed(name, process, log, critical)
        self.children.append(child)
        return child

    def failed(self) -> Managed | None:
        """A critical child that exited on its own, if any."""
        for child in self.children:
            if child.critical and child.process.poll() is not None:
                return child
        return None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT every child (newest first), then SIGKILL what is left after ``timeout``."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            if child.log is not None:
                child.log.close()


def node_argv(node: str, params: dict[str, Any], configs: Path) -> list[str]:
    """The command line of one node with its YAML file and parameter overrides."""
    argv = [sys.executable, "-m", f"spotvlm_ros.nodes.{node}", "--ros-args"]
    yaml_file = configs / f"{node}.yaml"
    if yaml_file.is_file():
        argv += ["--params-file", str(yaml_file)]
    for key, value in params.items():
        argv += ["-p", f"{key}:={ros_value(value)}"]
    return argv


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="spotvlm_ros", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default="", help="SVLM: Qwen2.5-VL model folder")
    p.add_argument("--camera-topic", default="/camera/image_raw")
    p.add_argument("--compressed", action="store_true", help="the camera topic is CompressedImage")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="LVLM API root")
    p.add_argument("--lvlm-model", default="Qwen/Qwen2.5-VL-72B-Instruct")
    p.add_argument("--task", default="bdd100k", help="task vocabulary: nuscenes, bdd100k, coco")
    p.add_argument("--question", default=None)
    p.add_argument("--deadline", type=float, default=1.0, help="s")
    p.add_argument("--rate", type=float, default=2.0, help="task rate, Hz")
    p.add_argument("--no-cloud", action="store_true", help="edge only: no cloud_bridge")
    p.add_argument("--start-server", action="store_true", help="start the local LVLM server")
    p.add_argument("--server-latency", type=float, default=2.0, help="its injected latency, s")
    p.add_argument("--server-port", type=int, default=8000)
    p.add_argument("--server-args", default="", help="more spotvlm-lvlm-server options")
    p.add_argument("--bag", type=Path, help="play this rosbag2 and stop when it has played")
    p.add_argument("--bag-rate", type=float, default=1.0)
    p.add_argument("--evaluate", action="store_true", help="run the evaluator node")
    p.add_argument("--report-dir", type=Path, default=Path("out/eval"))
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many s (0: never)")
    p.add_argument("--log-dir", type=Path, help="write each process's output to DIR/<name>.log")
    p.add_argument("--config-dir", type=Path, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override any node parameter (value in YAML), e.g. svlm_node.ggvr=false",
    )
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per-node parameters from the command line."""
    import yaml

    task = {"task_vocabulary": args.task}
    question = {"question": args.question} if args.question else {}
    params: dict[str, dict[str, Any]] = {
        "camera_ingest": {
            "input_topic": args.camera_topic,
            "rate_hz": args.rate,
            "compressed": args.compressed,
        },
        "svlm_node": {
            "model_path": args.model_path,
            "deadline_s": args.deadline,
            **task,
            **question,
        },
        "cloud_bridge": {"base_url": args.base_url, "model": args.lvlm_model, **task, **question},
        "context_manager": {"deadline_s": args.deadline, **question},
        "evaluator": {**task, "report_dir": str(args.report_dir)},
        "bag_player": {
            "bag_path": str(args.bag) if args.bag else "",
            "rate": args.bag_rate,
            "exit_when_done": True,
            "linger_s": 2.0 * args.deadline + 1.0,
            # start once every node listens to the frames (the SVLM has loaded its model)
            "ready_topics": [f"/spotvlm/frame:{2 if args.no_cloud else 3}"],
            "wait_for_subscribers_s": 120.0,
        },
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or node not in params:
            raise SystemExit(
                f"spotvlm_ros: --set {item!r}: expected NODE.PARAM=VALUE, NODE one of "
                f"{', '.join(params)}"
            )
        params[node][name] = yaml.safe_load(value)
    return params


def wait_for_server(url: str, server: Managed, timeout: float = 60.0) -> None:
    """Block until the LVLM server answers /health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"spotvlm_ros: the LVLM server exited ({server.process.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"spotvlm_ros: the LVLM server did not answer {url} within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    """Start the graph and supervise it."""
    args = parse_args(argv)
    if not args.model_path:
        print(
            "spotvlm_ros: --model-path is required (a Qwen2.5-VL folder; for a test run, "
            "build one with `spotvlm-make-tiny-model DIR`)",
            file=sys.stderr,
        )
        return 2
    params = overrides(args)
    configs = args.config_dir or config_dir()
    # Camera-sized frames need Fast DDS's larger shared-memory segment (config/fastdds.xml).
    if (configs / "fastdds.xml").is_file():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(configs / "fastdds.xml"))
    graph = Graph(args.log_dir)
    interrupted = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        if args.start_server:
            server = graph.start(
                "lvlm_server",
                [
                    sys.executable,
                    "-m",
                    "spotvlm_ros.cloud.server",
                    "--port",
                    str(args.server_port),
                    "--latency",
                    str(args.server_latency),
                    "--vocabulary",
                    args.task,
                    *args.server_args.split(),
                ],
            )
            wait_for_server(f"http://127.0.0.1:{args.server_port}/health", server)
            params["cloud_bridge"]["base_url"] = f"http://127.0.0.1:{args.server_port}/v1"
        nodes = [n for n in NODES if not (args.no_cloud and n == "cloud_bridge")]
        nodes += ["evaluator"] if args.evaluate else []
        for node in nodes:
            graph.start(node, node_argv(node, params[node], configs))
        player = None
        if args.bag:
            player = graph.start(
                "bag_player", node_argv("bag_player", params["bag_player"], configs), critical=False
            )
        started = time.monotonic()
        print(
            f"spotvlm_ros: running {', '.join(c.name for c in graph.children)} "
            f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})",
            flush=True,
        )
        while not interrupted:
            time.sleep(0.2)
            dead = graph.failed()
            if dead is not None:
                print(
                    f"spotvlm_ros: {dead.name} exited with {dead.process.returncode}; stopping",
                    file=sys.stderr,
                )
                rc = 1
                break
            if player is not None and player.process.poll() is not None:
                rc = 0 if player.process.returncode == 0 else 1
                print(
                    f"spotvlm_ros: the bag has played (bag_player exit {player.process.returncode})"
                )
                break
            if args.duration and time.monotonic() - started > args.duration:
                break
    finally:
        graph.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
