"""The whole spotvlm graph: camera_ingest, svlm_node (managed), cloud_bridge,
context_manager, and optionally the local LVLM server, a bag player and the evaluator.

    ros2 launch spotvlm_ros spotvlm.launch.py model_path:=/models/Qwen2.5-VL-3B-Instruct \
        base_url:=http://gpu-server:8000/v1 lvlm_model:=Qwen/Qwen2.5-VL-72B-Instruct

    ros2 launch spotvlm_ros spotvlm.launch.py model_path:=build/test-models/tiny \
        start_server:=true bag:=rosbags/demo evaluate:=true

The arguments are checked before anything starts: one that cannot work (a missing model
folder, an LVLM server nobody answers at, an unknown task) stops the launch with one
message. svlm_node, a managed node, brings itself to active (configure loads the model);
the bag player starts only once it is active, and the launch shuts down once the bag has
played. A node that dies is respawned (svlm_node configures and activates again); a node
that cannot start at all stops the launch. ``ros2 launch spotvlm_ros spotvlm.launch.py --show-args``
lists every argument.
"""

from __future__ import annotations

import shlex
from typing import Any

from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

from spotvlm_ros import launch_args
from spotvlm_ros.exit_codes import EXIT_NOTHING_SCORED, EXIT_STARTUP_ERROR
from spotvlm_ros.ros.distro import profile_launch_actions

PACKAGE = "spotvlm_ros"

ARGUMENTS = launch_args.ARGUMENTS


class GraphError(RuntimeError):
    """The graph cannot run; launch prints the message and exits 1."""


def generate_launch_description() -> LaunchDescription:
    """Declared arguments, the DDS profile, and the graph built from the arguments."""
    declared = [
        DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()
    ]
    argument, use_profile = profile_launch_actions(
        [FindPackageShare(PACKAGE), "/config/fastdds.xml"]
    )
    return LaunchDescription([*declared, argument, *use_profile, OpaqueFunction(function=graph)])


def graph(context: LaunchContext) -> list[Any]:
    """The graph's actions for the given arguments (checked first)."""
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    try:
        launch_args.check(values)
    except launch_args.LaunchArgumentError as exc:
        raise GraphError(f"spotvlm.launch.py: {exc}") from None
    on = lambda name: launch_args.flag(values, name)  # noqa: E731
    share = FindPackageShare(PACKAGE).perform(context)
    lib = f"{FindPackagePrefix(PACKAGE).perform(context)}/lib/{PACKAGE}"
    namespace = values["namespace"]
    respawn = on("respawn")
    delay = float(values["respawn_delay"])
    task = {"task": values["task"], "task_vocabulary": values["vocabulary"]}
    question = {"question": values["question"]} if values["question"] else {}
    deadline = float(values["deadline"])
    # the paper's variant: its node parameters go after config/<node>.yaml and before the
    # launch arguments' own (params_file still wins)
    preset = launch_args.PRESETS[values["method"]]
    cloud = launch_args.uses_cloud(values)

    def node(executable: str, params: dict[str, Any], cls: type = Node, **kw: Any) -> Any:
        # config/<node>.yaml, then the launch arguments, then params_file (it wins: the
        # runner's --set NODE.PARAM=VALUE lands there)
        extra = [values["params_file"]] if values["params_file"] else []
        return cls(
            package=PACKAGE,
            executable=executable,
            name=executable,
            namespace=namespace,
            output=values["output"],
            emulate_tty=True,
            parameters=[f"{share}/config/{executable}.yaml", params, *extra],
            arguments=["--ros-args", "--log-level", values["log_level"]],
            respawn=kw.pop("respawn", respawn),
            respawn_delay=delay,
            **kw,
        )

    ingest = node(
        "camera_ingest",
        {
            "input_topic": values["camera_topic"],
            "transport": values["transport"],
            "rate_hz": float(values["rate"]),
            # the graph's nodes that take the frames
            "frame_listeners": ["svlm_node", "context_manager"] + ["cloud_bridge"] * cloud,
        },
    )
    svlm = node(
        "svlm_node",
        {
            **preset.overrides.get("svlm_node", {}),
            "model_path": values["model_path"],
            "deadline_s": deadline,
            "autostart": on("autostart"),
            **task,
            **question,
        },
        cls=LifecycleNode,
    )
    manager = node("context_manager", {"deadline_s": deadline, **question})
    nodes = [ingest, svlm, manager]
    actions: list[Any] = []
    if cloud:
        nodes.append(
            node(
                "cloud_bridge",
                {
                    **preset.overrides.get("cloud_bridge", {}),
                    "deadline_s": deadline,
                    "base_url": values["base_url"],
                    "model": values["lvlm_model"],
                    "api_key_env": values["api_key_env"],
                    "structured_output": on("structured_output"),
                    **task,
                    **question,
                },
            )
        )
    if cloud and on("start_server"):
        actions.append(
            ExecuteProcess(
                cmd=[
                    f"{lib}/spotvlm-lvlm-server",
                    "--port",
                    values["server_port"],
                    "--latency",
                    values["server_latency"],
                    "--vocabulary",
                    launch_args.detector_vocabulary(values),
                    *shlex.split(values["server_args"]),
                ],
                name="lvlm_server",
                output=values["output"],
            )
        )
    if on("evaluate"):
        evaluator = node("evaluator", {"report_dir": values["report_dir"], **task})
        nodes.append(evaluator)
        actions.append(
            RegisterEventHandler(OnProcessExit(target_action=evaluator, on_exit=_scored))
        )
    actions += nodes
    for action in nodes:
        actions.append(RegisterEventHandler(OnProcessExit(target_action=action, on_exit=_fatal)))

    downstream: list[Any] = []
    if values["bag"]:
        server_health = (
            f"http://127.0.0.1:{values['server_port']}/health"
            if cloud and on("start_server")
            else ""
        )
        player = node(
            "bag_player",
            {
                "bag_path": values["bag"],
                "rate": float(values["bag_rate"]),
                "exit_when_done": True,
                "linger_s": 2.0 * deadline + 1.0,
                # every node that takes frames listens before the first one is played
                "ready_topics": [f"{_ns(namespace)}spotvlm/frame:{2 + cloud}"]
                # the evaluator must hear the first ground truth too
                + ([f"{_ns(namespace)}spotvlm/ground_truth:1"] if on("evaluate") else []),
                "ready_url": server_health,
            },
            respawn=False,
        )
        downstream.append(player)
        actions.append(RegisterEventHandler(OnProcessExit(target_action=player, on_exit=_played)))
    actions += _lifecycle(svlm, downstream)
    return actions


def _lifecycle(svlm: LifecycleNode, downstream: list[Any]) -> list[Any]:
    """Start ``downstream`` once svlm_node is first active; stop the launch if it cannot
    configure (its model does not load).

    svlm_node drives its own configure and activate (its ``autostart`` parameter) rather
    than being sent ChangeState events: after a respawn, launch's service client still
    saw the dead process's change_state service, and the request to the new one was lost.
    """
    started: list[bool] = []
    active_once: list[bool] = []

    def start_downstream(context: LaunchContext) -> list[Any]:
        active_once.append(True)
        if started or not downstream:
            return []
        started.append(True)
        return [LogInfo(msg="svlm_node is active: starting the bag player"), *downstream]

    def configure_failed(context: LaunchContext) -> list[Any]:
        if not active_once:  # the model never loaded: nothing would ever answer on board
            raise GraphError("svlm_node could not configure (its error is above): stopping")
        # an operator's later configure (ros2 lifecycle set) failed: the rest of the graph
        # goes on; the frames are the cloud's or invalid at the deadline until it is fixed
        return [
            LogInfo(
                msg="svlm_node could not configure again (its error is above): it stays "
                "unconfigured and the graph runs on without it (frames answered by the cloud "
                "or invalid at the deadline); fix the parameter, then `ros2 lifecycle set "
                "/svlm_node configure` and `activate`"
            )
        ]

    return [
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=svlm,
                start_state="configuring",
                goal_state="unconfigured",
                entities=[OpaqueFunction(function=configure_failed)],
            )
        ),
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=svlm,
                goal_state="active",
                entities=[OpaqueFunction(function=start_downstream)],
            )
        ),
    ]


def _fatal(event: ProcessExited, context: LaunchContext) -> None:
    """A node that exits because it cannot start would only be respawned into the same
    error: stop the launch instead, naming it."""
    if event.returncode == EXIT_STARTUP_ERROR:
        name = getattr(event.action, "node_name", event.process_name)
        raise GraphError(f"{name} cannot start (its error is above): stopping")


def _scored(event: ProcessExited, context: LaunchContext) -> None:
    """The evaluator exits EXIT_NOTHING_SCORED when it scored no frame: the launch must not
    end "fine" then."""
    if event.returncode == EXIT_NOTHING_SCORED:
        raise GraphError("the evaluator scored no frame (its error is above)")


def _played(event: ProcessExited, context: LaunchContext) -> list[Any]:
    """The bag has played: shut down, or fail when the player could not play it."""
    if event.returncode != 0:
        raise GraphError(f"the bag player failed (exit {event.returncode}; its error is above)")
    return [EmitEvent(event=Shutdown(reason="the bag has played"))]


def _ns(namespace: str) -> str:
    """The prefix that the graph's relative topics get under ``namespace``."""
    namespace = namespace.strip("/")
    return f"/{namespace}/" if namespace else "/"
