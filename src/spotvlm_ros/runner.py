"""`spotvlm_ros`: start the whole graph from the command line, through launch/spotvlm.launch.py.

A thin wrapper over the one description of the graph: its options become the launch
file's arguments (``ros2 launch spotvlm_ros spotvlm.launch.py --show-args`` lists them),
``--set NODE.PARAM=VALUE`` becomes a parameter file, ``--log-dir`` writes each process's
output to its own file there. Ctrl-C stops everything; with --bag the graph stops by
itself once the bag has played; the exit status is launch's (1 when an argument or a node
could not start).

    spotvlm_ros --model-path /models/Qwen2.5-VL-3B-Instruct --base-url http://gpu:8000/v1
    spotvlm_ros --model-path build/test-models/tiny --start-server --bag rosbags/demo --evaluate
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

NODES = ("camera_ingest", "svlm_node", "cloud_bridge", "context_manager", "evaluator", "bag_player")


def launch_file() -> Path:
    """The installed spotvlm.launch.py, else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("spotvlm_ros")) / "launch"
        if (installed / "spotvlm.launch.py").is_file():
            return installed / "spotvlm.launch.py"
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parents[2] / "launch" / "spotvlm.launch.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="spotvlm_ros", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default="", help="SVLM: Qwen2.5-VL model folder")
    p.add_argument("--namespace", default="", help="ROS namespace of the graph")
    p.add_argument("--camera-topic", default="/camera/image_raw")
    p.add_argument(
        "--transport", choices=("auto", "raw", "compressed"), default="auto", help="camera"
    )
    p.add_argument("--compressed", action="store_true", help="same as --transport compressed")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="LVLM API root")
    p.add_argument("--lvlm-model", default="Qwen/Qwen2.5-VL-72B-Instruct")
    p.add_argument("--api-key-env", default="", help="NAME of the variable holding the API key")
    p.add_argument("--task", default="bdd100k", help="task vocabulary: nuscenes, bdd100k, coco")
    p.add_argument("--question", default="")
    p.add_argument("--deadline", type=float, default=1.0, help="s")
    p.add_argument("--rate", type=float, default=2.0, help="task rate, Hz")
    p.add_argument("--no-cloud", action="store_true", help="edge only: no cloud_bridge")
    p.add_argument(
        "--no-check-lvlm", action="store_true", help="start even if base_url does not answer"
    )
    p.add_argument("--start-server", action="store_true", help="start the local LVLM server")
    p.add_argument("--server-latency", type=float, default=2.0, help="its injected latency, s")
    p.add_argument("--server-port", type=int, default=8000)
    p.add_argument("--server-args", default="", help="more spotvlm-lvlm-server options")
    p.add_argument("--bag", type=Path, help="play this rosbag2 and stop when it has played")
    p.add_argument("--bag-rate", type=float, default=1.0)
    p.add_argument("--evaluate", action="store_true", help="run the evaluator node")
    p.add_argument("--report-dir", type=Path, default=Path("out/eval"))
    p.add_argument("--no-respawn", action="store_true", help="do not restart a node that dies")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many s (0: never)")
    p.add_argument("--log-dir", type=Path, help="write each process's output to DIR/<name>-N.log")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override any node parameter (value in YAML), e.g. svlm_node.ggvr=false",
    )
    return p.parse_args(argv)


def overrides_file(items: list[str], folder: Path) -> Path | None:
    """A ROS parameter file holding the ``--set NODE.PARAM=VALUE`` overrides."""
    import yaml

    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, name = key.partition(".")
        if not sep or not dot or node not in NODES:
            raise SystemExit(
                f"spotvlm_ros: --set {item!r}: expected NODE.PARAM=VALUE, NODE one of "
                f"{', '.join(NODES)}"
            )
        params.setdefault(node, {})[name] = yaml.safe_load(value)
    if not params:
        return None
    path = folder / "spotvlm_overrides.yaml"
    # "/**/NODE" matches the node in any namespace
    body = {f"/**/{node}": {"ros__parameters": values} for node, values in params.items()}
    path.write_text(yaml.safe_dump(body, sort_keys=True))
    return path


def launch_arguments(args: argparse.Namespace, params_file: Path | None) -> dict[str, str]:
    """The launch file's arguments for the command line."""
    text = lambda value: "true" if value else "false"  # noqa: E731
    base_url = args.base_url
    if args.start_server:
        base_url = f"http://127.0.0.1:{args.server_port}/v1"
    return {
        "model_path": args.model_path,
        "namespace": args.namespace,
        "camera_topic": args.camera_topic,
        "transport": "compressed" if args.compressed else args.transport,
        "base_url": base_url,
        "lvlm_model": args.lvlm_model,
        "api_key_env": args.api_key_env,
        "task": args.task,
        "question": args.question,
        "deadline": str(args.deadline),
        "rate": str(args.rate),
        "cloud": text(not args.no_cloud),
        "check_lvlm": text(not args.no_check_lvlm),
        "start_server": text(args.start_server),
        "server_port": str(args.server_port),
        "server_latency": str(args.server_latency),
        "server_args": args.server_args,
        "bag": str(args.bag) if args.bag else "",
        "bag_rate": str(args.bag_rate),
        "evaluate": text(args.evaluate),
        "report_dir": str(args.report_dir),
        "respawn": text(not args.no_respawn),
        "params_file": str(params_file) if params_file else "",
        "output": "own_log" if args.log_dir else "screen",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the launch description until it shuts down; returns launch's exit status."""
    args = parse_args(argv)
    try:
        import launch
        from launch.actions import IncludeLaunchDescription
        from launch.launch_description_sources import PythonLaunchDescriptionSource
    except ImportError:
        print(
            "spotvlm_ros: the launch packages are not installed; `scripts/dev setup` installs "
            "them from the ROS 2 wheelhouse (see README)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="spotvlm_") as tmp:
        params_file = overrides_file(args.set, Path(tmp))
        if args.log_dir:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            launch.logging.launch_config.log_dir = str(args.log_dir.resolve())
        service = launch.LaunchService(noninteractive=True)
        source = PythonLaunchDescriptionSource(str(launch_file()))
        arguments = launch_arguments(args, params_file)
        service.include_launch_description(
            IncludeLaunchDescription(source, launch_arguments=arguments.items())
        )
        if args.duration:
            timer = threading.Timer(args.duration, service.shutdown)
            timer.daemon = True
            timer.start()
        print(
            f"spotvlm_ros: launching {launch_file()} "
            f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})",
            flush=True,
        )
        return int(service.run())


if __name__ == "__main__":
    sys.exit(main())
