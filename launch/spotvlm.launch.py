"""The whole spotvlm graph: camera_ingest, svlm_node, cloud_bridge, context_manager, and
optionally the local LVLM server, a bag player and the evaluator.

    ros2 launch spotvlm_ros spotvlm.launch.py model_path:=/models/Qwen2.5-VL-3B-Instruct \
        base_url:=http://gpu-server:8000/v1 lvlm_model:=Qwen/Qwen2.5-VL-72B-Instruct

With ``bag:=PATH`` the bag is played and the launch shuts down once it has played.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
    PythonExpression,
)
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

PACKAGE = "spotvlm_ros"

ARGUMENTS = {
    "camera_topic": ("/camera/image_raw", "camera topic (sensor_msgs/Image)"),
    "compressed": ("false", "the camera topic carries sensor_msgs/CompressedImage"),
    "model_path": ("", "SVLM: Qwen2.5-VL model folder"),
    "base_url": ("http://127.0.0.1:8000/v1", "LVLM: OpenAI-compatible API root"),
    "lvlm_model": ("Qwen/Qwen2.5-VL-72B-Instruct", "LVLM: served model name"),
    "api_key_env": ("", "LVLM: NAME of the environment variable holding the API key"),
    "task": ("bdd100k", "task vocabulary: nuscenes, bdd100k, coco"),
    "deadline": ("1.0", "real-time deadline [s]"),
    "rate": ("2.0", "task rate [Hz]"),
    "start_server": ("false", "start the package's local LVLM server (detector backend)"),
    "server_port": ("8000", "its port (base_url must point at it)"),
    "server_latency": ("2.0", "its injected latency [s]"),
    "bag": ("", "a rosbag2 folder to play (and stop when played)"),
    "bag_rate": ("1.0", "playback speed factor"),
    "evaluate": ("false", "run the evaluator against /spotvlm/ground_truth"),
    "report_dir": ("out/eval", "where the evaluator writes its report"),
    "log_level": ("info", "ROS log level of the nodes"),
}


def config(name: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", f"{name}.yaml"])


def text(name: str) -> ParameterValue:
    """A launch argument passed as a string parameter (never YAML-converted)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def number(name: str) -> ParameterValue:
    return ParameterValue(LaunchConfiguration(name), value_type=float)


def flag(name: str) -> ParameterValue:
    return ParameterValue(LaunchConfiguration(name), value_type=bool)


def node(executable: str, parameters: dict, **kwargs) -> Node:
    return Node(
        package=PACKAGE,
        executable=executable,
        name=executable,
        output="screen",
        emulate_tty=True,
        parameters=[config(executable), parameters],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        **kwargs,
    )


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()
    ]
    default_profile = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "fastdds.xml"])
    declared.append(
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE", default_value=default_profile
            ),
            description="Fast DDS profile (the default has a large shared-memory segment)",
        )
    )
    task = {"task_vocabulary": text("task")}
    bag_player = node(
        "bag_player",
        {"bag_path": text("bag"), "rate": number("bag_rate"), "exit_when_done": True},
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("bag"), "' != ''"])),
    )
    server = ExecuteProcess(
        cmd=[
            PathJoinSubstitution(
                [FindPackagePrefix(PACKAGE), "lib", PACKAGE, "spotvlm-lvlm-server"]
            ),
            "--port",
            LaunchConfiguration("server_port"),
            "--latency",
            LaunchConfiguration("server_latency"),
            "--vocabulary",
            LaunchConfiguration("task"),
        ],
        name="lvlm_server",
        output="screen",
        condition=IfCondition(LaunchConfiguration("start_server")),
    )
    return LaunchDescription(
        [
            *declared,
            SetEnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")
            ),
            server,
            node(
                "camera_ingest",
                {
                    "input_topic": text("camera_topic"),
                    "rate_hz": number("rate"),
                    "compressed": flag("compressed"),
                },
            ),
            node(
                "svlm_node",
                {"model_path": text("model_path"), "deadline_s": number("deadline"), **task},
            ),
            node(
                "cloud_bridge",
                {
                    "base_url": text("base_url"),
                    "model": text("lvlm_model"),
                    "api_key_env": text("api_key_env"),
                    **task,
                },
            ),
            node("context_manager", {"deadline_s": number("deadline")}),
            node(
                "evaluator",
                {"report_dir": text("report_dir"), **task},
                condition=IfCondition(LaunchConfiguration("evaluate")),
            ),
            bag_player,
            RegisterEventHandler(
                OnProcessExit(
                    target_action=bag_player,
                    on_exit=[EmitEvent(event=Shutdown(reason="the bag has played"))],
                )
            ),
        ]
    )
