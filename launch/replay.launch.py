"""Replay a labelled bag through the whole graph with the local LVLM server and the evaluator.

    ros2 launch spotvlm_ros replay.launch.py bag:=rosbags/demo \
        model_path:=/models/Qwen2.5-VL-3B-Instruct

Every argument of spotvlm.launch.py can be given; this file only changes the defaults
(start_server:=true, evaluate:=true) and requires ``bag``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

REPLAY_DEFAULTS = {
    "start_server": ("true", "start the local LVLM server"),
    "evaluate": ("true", "score the answers against the bag's ground truth"),
    "server_latency": ("2.0", "injected cloud latency [s]"),
}


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(
            "bag", description="rosbag2 folder with camera frames and ground truth"
        )
    ]
    declared += [
        DeclareLaunchArgument(k, default_value=v, description=d)
        for k, (v, d) in REPLAY_DEFAULTS.items()
    ]
    main = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("spotvlm_ros"), "launch", "spotvlm.launch.py"])
        ),
        launch_arguments={k: LaunchConfiguration(k) for k in ["bag", *REPLAY_DEFAULTS]}.items(),
    )
    return LaunchDescription([*declared, main])
