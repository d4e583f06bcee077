"""One spotvlm graph per camera of a robot, all sharing one LVLM endpoint (or replica list).

    ros2 launch spotvlm_ros fleet.launch.py robot:=car1 \
        cameras:=CAM_FRONT,CAM_FRONT_LEFT,CAM_FRONT_RIGHT,CAM_BACK,CAM_BACK_LEFT,CAM_BACK_RIGHT \
        camera_topic:='/{camera}/image_raw' model_path:=/models/Qwen2.5-VL-3B-Instruct \
        base_url:=http://lvlm-a:8000/v1,http://lvlm-b:8000/v1

Each camera gets spotvlm.launch.py under the namespace ``/<robot>/<camera>`` (its nodes and
its ``spotvlm/`` topics), reading ``camera_topic`` with ``{robot}`` and ``{camera}``
filled in; its cloud_bridge sends ``<robot>/<camera>`` as the OpenAI ``user`` field. Every
message stays with its camera: nothing is shared between the graphs but the LVLM.

Each graph has its own svlm_node, so the SVLM is loaded once per camera (docs/robot.md
says why, with the memory figure). With ``start_server:=true`` one local LVLM server serves
every camera; with ``bag:=`` one bag player plays a multi-camera bag (``spotvlm-make-bag
nuscenes ... --camera all`` puts camera X on ``/x/camera/image_raw``: use
``camera_topic:='/{camera}/camera/image_raw'`` with lower-case camera names) once every
graph listens, and the launch ends when it has played.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

from spotvlm_ros import launch_args
from spotvlm_ros.ros.distro import profile_launch_actions

PACKAGE = "spotvlm_ros"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

FLEET_ARGUMENTS = {
    "robot": ("", "the robot's name: graphs go under /<robot>/<camera> ('' = /<camera>)"),
    "cameras": ("cam_front", "comma-separated camera names, one graph each"),
    "camera_topic": (
        "/{camera}/image_raw",
        "each camera's image topic; {robot} and {camera} are filled in",
    ),
}
# passed to every camera's spotvlm.launch.py unchanged
SHARED = (
    "transport",
    "model_path",
    "base_url",
    "lvlm_model",
    "api_key_env",
    "structured_output",
    "method",
    "task",
    "vocabulary",
    "question",
    "deadline",
    "rate",
    "cloud",
    "check_lvlm",
    "autostart",
    "respawn",
    "respawn_delay",
    "params_file",
    "output",
    "log_level",
)
# the fleet's own: one server and one bag player for all cameras
OWN = ("start_server", "server_port", "server_latency", "server_args", "bag", "bag_rate")


class FleetError(RuntimeError):
    """An argument that cannot work: the launch stops with this one message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"fleet.launch.py: {message}")


def generate_launch_description() -> LaunchDescription:
    """Declared arguments, then the graphs built from them."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in FLEET_ARGUMENTS.items()
    ]
    declared += [
        DeclareLaunchArgument(
            name,
            default_value=launch_args.ARGUMENTS[name][0],
            description=launch_args.ARGUMENTS[name][1],
        )
        for name in (*SHARED, *OWN)
    ]
    # the fleet's own bag player and server need the large-frame profile too (each graph
    # sets it for its nodes, in its own scope)
    argument, use_profile = profile_launch_actions(
        [FindPackageShare(PACKAGE), "/config/fastdds.xml"]
    )
    return LaunchDescription([*declared, argument, *use_profile, OpaqueFunction(function=fleet)])


def cameras_of(text: str) -> list[str]:
    """The camera names of ``cameras:=`` (each a ROS name token, none twice)."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise FleetError("cameras:= names no camera")
    for name in names:
        if not NAME.match(name):
            raise FleetError(f"cameras:= {name!r} is not a ROS name (letters, digits, _)")
    if len(set(names)) != len(names):
        raise FleetError(f"cameras:= lists a camera twice: {names}")
    return names


def fleet(context: LaunchContext) -> list[Any]:
    """The graphs, the shared server and the bag player for the given arguments."""
    names = (*FLEET_ARGUMENTS, *SHARED, *OWN)
    values = {n: LaunchConfiguration(n).perform(context) for n in names}
    robot = values["robot"].strip("/")
    if robot and not NAME.match(robot):
        raise FleetError(f"robot:={robot!r} is not a ROS name (letters, digits, _)")
    cameras = cameras_of(values["cameras"])
    if "{camera}" not in values["camera_topic"]:
        raise FleetError(
            f"camera_topic:={values['camera_topic']!r} has no {{camera}}: every camera "
            "would read the same topic"
        )
    try:
        on = lambda name: launch_args.flag(values, name)  # noqa: E731
        for name in ("cloud", "start_server"):
            on(name)
        deadline = launch_args.number(values, "deadline", 0.01, 60.0)
        if values["method"] not in launch_args.PRESETS:
            raise launch_args.LaunchArgumentError(
                f"method:={values['method']!r} must be one of {', '.join(launch_args.PRESETS)}"
            )
        cloud = launch_args.uses_cloud(values)
        bag_rate = launch_args.number(values, "bag_rate", 0.01, 100.0)
        launch_args.task(values["task"]).vocabulary(values["vocabulary"])
    except (launch_args.LaunchArgumentError, ValueError) as exc:
        raise FleetError(str(exc)) from None
    share = FindPackageShare(PACKAGE).perform(context)
    lib = f"{FindPackagePrefix(PACKAGE).perform(context)}/lib/{PACKAGE}"
    actions: list[Any] = []
    if cloud and on("start_server"):
        # one check of the shared server's port, as a single graph would make it
        try:
            url = launch_args.check_url(values["base_url"].split(",")[0].strip())
            launch_args.check_local_server(url, values["server_port"])
            launch_args.number(values, "server_latency", 0.0, 3600.0)
            launch_args.check_server_task(values)
        except launch_args.LaunchArgumentError as exc:
            raise FleetError(str(exc)) from None
        actions.append(
            ExecuteProcess(
                cmd=[
                    f"{lib}/spotvlm-lvlm-server",
                    *("--port", values["server_port"], "--latency", values["server_latency"]),
                    *("--vocabulary", launch_args.detector_vocabulary(values)),
                    *shlex.split(values["server_args"]),
                ],
                name="lvlm_server",
                output=values["output"],
            )
        )
    single = PythonLaunchDescriptionSource(f"{share}/launch/spotvlm.launch.py")
    frame_topics = []
    for camera in cameras:
        namespace = f"/{robot}/{camera}" if robot else f"/{camera}"
        arguments = {name: values[name] for name in SHARED}
        arguments.update(
            namespace=namespace,
            camera_topic=values["camera_topic"]
            .format(robot=robot, camera=camera)
            .replace("//", "/"),
            # the shared server is started here, and may still be starting
            start_server="false",
            check_lvlm="false" if on("start_server") else values["check_lvlm"],
            bag="",
        )
        actions.append(
            GroupAction(
                [IncludeLaunchDescription(single, launch_arguments=arguments.items())],
                scoped=True,
            )
        )
        frame_topics.append(f"{namespace}/spotvlm/frame:{2 + cloud}")
    if values["bag"]:
        player = Node(
            package=PACKAGE,
            executable="bag_player",
            name="bag_player",
            output=values["output"],
            arguments=["--ros-args", "--log-level", values["log_level"]],
            parameters=[
                f"{share}/config/bag_player.yaml",
                {
                    "bag_path": values["bag"],
                    "rate": bag_rate,
                    "exit_when_done": True,
                    "linger_s": 2.0 * deadline + 1.0,
                    # every camera's SVLM loads before the first frame is played
                    "wait_for_subscribers_s": 600.0,
                    "ready_topics": frame_topics,
                    "ready_url": (
                        f"http://127.0.0.1:{values['server_port']}/health"
                        if on("start_server")
                        else ""
                    ),
                },
                *([values["params_file"]] if values["params_file"] else []),
            ],
        )
        actions.append(player)
        actions.append(RegisterEventHandler(OnProcessExit(target_action=player, on_exit=_played)))
    return actions


def _played(event: ProcessExited, context: LaunchContext) -> list[Any]:
    if event.returncode != 0:
        raise FleetError(f"the bag player failed (exit {event.returncode}; its error is above)")
    return [EmitEvent(event=Shutdown(reason="the bag has played"))]
