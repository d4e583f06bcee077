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


# the runner's own spelling of some launch arguments (the rest are --<name-with-dashes>)
RENAMED = {"cloud": "no-cloud", "check_lvlm": "no-check-lvlm", "respawn": "no-respawn"}
OWN_OPTIONS = ("params_file", "output")  # made by the runner from --set and --log-dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: one option per launch argument of spotvlm.launch.py (its table,
    launch_args.ARGUMENTS, gives the defaults and help), and the runner's own."""
    from spotvlm_ros.core.task import TASKS
    from spotvlm_ros.launch_args import ARGUMENTS, LOG_LEVELS, TRANSPORTS
    from spotvlm_ros.parameters import PRESETS

    p = argparse.ArgumentParser(prog="spotvlm_ros", description=__doc__.splitlines()[0])
    choices: dict[str, tuple[str, ...]] = {
        "transport": TRANSPORTS,
        "log_level": LOG_LEVELS,
        "method": tuple(m for m, preset in PRESETS.items() if preset.live),
        "task": tuple(TASKS),
    }
    for name, (default, text) in ARGUMENTS.items():
        if name in OWN_OPTIONS:
            continue
        if default in ("true", "false"):
            option = RENAMED.get(name, name.replace("_", "-"))
            on_by_default = default == "true"
            if on_by_default and option.startswith("no-"):
                p.add_argument(f"--{option}", dest=name, action="store_false", help=text)
            else:
                p.add_argument(
                    f"--{option}",
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    default=on_by_default,
                    help=text,
                )
            continue
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=default,
            choices=choices.get(name),
            help=text,
        )
    p.add_argument("--compressed", action="store_true", help="same as --transport compressed")
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
    """The launch file's arguments for the command line (every one of them)."""
    from spotvlm_ros.launch_args import ARGUMENTS

    values: dict[str, str] = {}
    for name in ARGUMENTS:
        if name in OWN_OPTIONS:
            continue
        value = getattr(args, name)
        values[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if args.compressed:
        values["transport"] = "compressed"
    if args.start_server:  # the local server is where the LVLM is
        values["base_url"] = f"http://127.0.0.1:{args.server_port}/v1"
    values["params_file"] = str(params_file) if params_file else ""
    values["output"] = "own_log" if args.log_dir else "screen"
    return values


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
