"""Checks of spotvlm.launch.py's arguments before any process starts (no ROS imports).

A launch argument that cannot work (a missing model folder, an LVLM server nobody
answers at, an unknown task) stops ``ros2 launch`` at once with one message that says
what to change, instead of starting a graph that waits, retries or answers nothing.
"""

from __future__ import annotations

import shlex
import socket
import urllib.parse
from pathlib import Path

from spotvlm_ros import parameters
from spotvlm_ros.core.task import TASKS, task
from spotvlm_ros.parameters import DEFAULT_PRESET, PRESETS, default
from spotvlm_ros.svlm.source import model_source_problem

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
TRANSPORTS = ("auto", "raw", "compressed")
OUTPUTS = ("screen", "log", "both", "own_log", "full")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def _text(value: object) -> str:
    """A parameter's default as a launch argument's text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


ARGUMENTS: dict[str, tuple[str, str]] = {
    "namespace": ("", "ROS namespace of the graph's nodes and spotvlm/ topics (robot, camera)"),
    "camera_topic": (
        _text(default("camera_ingest", "input_topic")),
        "camera image topic (image_transport base name)",
    ),
    "transport": (
        _text(default("camera_ingest", "transport")),
        "auto: whatever is published on camera_topic or camera_topic/compressed; raw; compressed",
    ),
    "model_path": ("", "SVLM: Qwen2.5-VL model folder (required)"),
    "base_url": (_text(default("cloud_bridge", "base_url")), "LVLM: OpenAI-compatible API root"),
    "lvlm_model": (_text(default("cloud_bridge", "model")), "LVLM: served model name"),
    "api_key_env": ("", "LVLM: NAME of the environment variable holding the API key"),
    "structured_output": (
        _text(default("cloud_bridge", "structured_output")),
        "LVLM: ask for the ROI JSON through response_format json_schema (vLLM, SGLang); "
        "a server that refuses it is asked plainly",
    ),
    "method": (
        DEFAULT_PRESET,
        "the paper's variant: "
        + "; ".join(f"{p.name} ({p.description})" for p in PRESETS.values() if p.live)
        + " (cloud_only and distributed_vlm are evaluated offline: spotvlm-eval)",
    ),
    "task": (
        parameters.TASK,
        "the task: " + "; ".join(f"{t.name} ({t.description})" for t in TASKS.values()),
    ),
    "vocabulary": ("", parameters.VOCABULARY_TEXT),
    "question": ("", "the question asked about every frame (empty: the task's default)"),
    "deadline": (_text(parameters.DEADLINE_S), "real-time deadline [s]"),
    "rate": (_text(parameters.RATE_HZ), "task rate [Hz]"),
    "cloud": ("true", "run cloud_bridge (false: the SVLM answers alone)"),
    "check_lvlm": ("true", "stop at once if base_url does not accept a connection"),
    "start_server": ("false", "start the package's local LVLM server (detector backend)"),
    "server_port": ("8000", "its port (base_url must point at it)"),
    "server_latency": ("2.0", "its injected latency [s]"),
    "server_args": ("", "more spotvlm-lvlm-server options, e.g. '--error-rate 0.1'"),
    "bag": ("", "a rosbag2 folder to play once svlm_node is active (and stop when played)"),
    "bag_rate": (_text(default("bag_player", "rate")), "playback speed factor"),
    "evaluate": ("false", "run the evaluator against spotvlm/ground_truth"),
    "report_dir": ("out/eval", "where the evaluator writes its report"),
    "autostart": ("true", "bring svlm_node to active (false: leave it unconfigured)"),
    "respawn": ("true", "restart a node that dies"),
    "respawn_delay": ("1.0", "wait this long before restarting it [s]"),
    "params_file": ("", "a ROS parameter file applied to every node last (it overrides all)"),
    "output": ("screen", "node output: screen, log, or own_log (a file per node)"),
    "log_level": ("info", "ROS log level of the nodes"),
}
"""spotvlm.launch.py's arguments: name -> (default, description). The node parameters they
set take their defaults from spotvlm_ros.parameters; the runner's options are made from
this table (fleet.launch.py passes most of them through)."""

PARAMETER_OF = {
    "camera_topic": ("camera_ingest", "input_topic"),
    "transport": ("camera_ingest", "transport"),
    "base_url": ("cloud_bridge", "base_url"),
    "lvlm_model": ("cloud_bridge", "model"),
    "structured_output": ("cloud_bridge", "structured_output"),
    "task": ("svlm_node", "task"),
    "vocabulary": ("svlm_node", "task_vocabulary"),
    "deadline": ("svlm_node", "deadline_s"),
    "rate": ("camera_ingest", "rate_hz"),
    "bag_rate": ("bag_player", "rate"),
}
"""The launch arguments that set a node parameter (tests check that the defaults agree)."""


class LaunchArgumentError(ValueError):
    """A launch argument that cannot work; the message names it and what to change."""


def flag(values: dict[str, str], name: str) -> bool:
    """A true/false launch argument."""
    value = values[name].strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise LaunchArgumentError(f"{name}:={values[name]!r} must be true or false")


def number(values: dict[str, str], name: str, low: float, high: float) -> float:
    """A numeric launch argument within [low, high]."""
    try:
        value = float(values[name])
    except ValueError:
        raise LaunchArgumentError(f"{name}:={values[name]!r} is not a number") from None
    if not low <= value <= high:
        raise LaunchArgumentError(f"{name}:={value:g} is outside [{low:g}, {high:g}]")
    return value


def detector_vocabulary(values: dict[str, str]) -> str:
    """The local server's --vocabulary: its detector answers the objects task in the graph's
    vocabulary, and refuses the other tasks (whatever vocabulary it holds)."""
    chosen = task(values["task"])
    if chosen.name != "objects":
        return TASKS["objects"].default_vocabulary
    return chosen.vocabulary(values["vocabulary"]).name


def server_backend(values: dict[str, str]) -> str:
    """The local server's backend as server_args:= chooses it (detector by default)."""
    args = shlex.split(values["server_args"])
    backend = "detector"
    for k, arg in enumerate(args):
        if arg == "--backend" and k + 1 < len(args):
            backend = args[k + 1]
        elif arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
    return backend


def check_server_task(values: dict[str, str]) -> None:
    """The local server can answer the task: its detector backend answers only objects."""
    if values["task"] != "objects" and server_backend(values) != "qwen":
        raise LaunchArgumentError(
            f"start_server:=true with task:={values['task']}: the local server's detector "
            "backend answers only the objects task; give it a VLM (server_args:='--backend "
            "qwen --qwen-model <Qwen2.5-VL folder>') or point base_url at a VLM server"
        )


def uses_cloud(values: dict[str, str]) -> bool:
    """Whether the graph runs cloud_bridge (and the local server, if asked): ``cloud:=true``
    and a method that uses the LVLM (edge_only does not)."""
    return flag(values, "cloud") and PRESETS[values["method"]].lvlm


def check(values: dict[str, str]) -> None:
    """Raise LaunchArgumentError for the first argument in ``values`` that cannot work."""
    problem = model_source_problem(values["model_path"], "model_path")
    if problem is not None:
        raise LaunchArgumentError(problem)
    if values["method"] not in PRESETS:
        raise LaunchArgumentError(
            f"method:={values['method']!r} must be one of {', '.join(PRESETS)}"
        )
    if not PRESETS[values["method"]].live:
        raise LaunchArgumentError(
            f"method:={values['method']} is evaluated offline (the live graph runs "
            f"{', '.join(p.name for p in PRESETS.values() if p.live)}): spotvlm-eval ... "
            f"--methods {values['method']}"
        )
    baseline = PRESETS[values["method"]].baseline
    if baseline and not flag(values, "cloud"):
        raise LaunchArgumentError(
            f"method:={values['method']} decides between the SVLM and the cloud: it needs "
            "cloud:=true (for the SVLM alone: method:=edge_only)"
        )
    try:
        task(values["task"]).vocabulary(values["vocabulary"])
    except ValueError as exc:
        raise LaunchArgumentError(
            f"task:={values['task']!r} vocabulary:={values['vocabulary']!r}: {exc}"
        ) from None
    if values["transport"] not in TRANSPORTS:
        raise LaunchArgumentError(
            f"transport:={values['transport']!r} must be one of {', '.join(TRANSPORTS)}"
        )
    number(values, "deadline", 0.01, 60.0)
    number(values, "rate", 0.05, 30.0)
    number(values, "bag_rate", 0.01, 100.0)
    number(values, "respawn_delay", 0.0, 3600.0)
    flags = ("cloud", "check_lvlm", "start_server", "evaluate", "autostart", "respawn")
    for name in (*flags, "structured_output"):
        flag(values, name)
    if values["output"] not in OUTPUTS:
        raise LaunchArgumentError(
            f"output:={values['output']!r} must be one of {', '.join(OUTPUTS)}"
        )
    if values["log_level"].lower() not in LOG_LEVELS:
        raise LaunchArgumentError(
            f"log_level:={values['log_level']!r} must be one of {', '.join(LOG_LEVELS)}"
        )
    if values["params_file"] and not Path(values["params_file"]).is_file():
        raise LaunchArgumentError(f"params_file:={values['params_file']!r}: no such file")
    bag = values["bag"]
    if bag and not (Path(bag) / "metadata.yaml").is_file():
        raise LaunchArgumentError(
            f"bag:={bag!r} is not a rosbag2 folder (no metadata.yaml there); make one with "
            "`spotvlm-make-bag`"
        )
    if uses_cloud(values):
        # a comma-separated list names replicas of one engine (cloud_bridge fails over)
        urls = [check_url(u.strip()) for u in values["base_url"].split(",") if u.strip()]
        if not urls:
            raise LaunchArgumentError("base_url:= names no LVLM endpoint")
        if flag(values, "start_server"):
            number(values, "server_latency", 0.0, 3600.0)
            check_local_server(urls[0], values["server_port"])
            check_server_task(values)
        elif flag(values, "check_lvlm"):
            problems = []
            for url in urls:  # one replica up is enough to start: the others are retried
                try:
                    check_reachable(url)
                    break
                except LaunchArgumentError as exc:
                    problems.append(str(exc))
            else:
                raise LaunchArgumentError(
                    problems[0]
                    if len(problems) == 1
                    else (
                        f"none of the {len(urls)} LVLM endpoints can be reached: "
                        + "; ".join(p.split(" (")[0] for p in problems)
                        + " (check_lvlm:=false starts anyway)"
                    )
                )


def check_url(base_url: str) -> urllib.parse.SplitResult:
    """``base_url`` parsed; an http(s) URL with a host."""
    url = urllib.parse.urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise LaunchArgumentError(
            f"base_url:={base_url!r} is not an http(s) URL (e.g. http://gpu-server:8000/v1)"
        )
    return url


def check_local_server(url: urllib.parse.SplitResult, port: str) -> None:
    """With start_server, base_url must point at the server that will be started."""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchArgumentError(f"server_port:={port!r} is not a port number")
    if url.port != int(port) or url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise LaunchArgumentError(
            f"start_server:=true starts the local LVLM server on port {port}, but "
            f"base_url:={url.geturl()!r} points elsewhere: use "
            f"base_url:=http://127.0.0.1:{port}/v1 (or start_server:=false)"
        )
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
            pass
    except OSError:
        return
    raise LaunchArgumentError(
        f"start_server:=true, but something already listens on 127.0.0.1:{port}: "
        f"pick another server_port, or use that server with start_server:=false"
    )


def check_reachable(url: urllib.parse.SplitResult, timeout: float = 3.0) -> None:
    """Fail unless a TCP connection to the LVLM server opens within ``timeout``."""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise LaunchArgumentError(
            f"cannot reach the LVLM server at {url.geturl()} ({why}): start it, point "
            "base_url:= at a running one, use start_server:=true for the local one, or "
            "check_lvlm:=false to start anyway (the SVLM answers alone until it is up)"
        ) from None
