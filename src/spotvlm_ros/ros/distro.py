"""What differs between the ROS 2 distributions the package runs on (Humble, Jazzy, Kilted),
each difference in one small function, so that nodes and launch files have no copies per
distro.

Fast DDS's XML profile: Fast DDS 2.x (Humble, Jazzy) reads it from
``FASTRTPS_DEFAULT_PROFILES_FILE``; Fast DDS 3.x (Kilted) renamed the variable
``FASTDDS_DEFAULT_PROFILES_FILE``. Setting one name only left Jazzy without the large
shared-memory segment of config/fastdds.xml, and camera-sized best-effort frames were lost.

Discovery on this host only: Jazzy and Kilted read ``ROS_AUTOMATIC_DISCOVERY_RANGE``; Humble
knows only ``ROS_LOCALHOST_ONLY`` (which Jazzy and later deprecate, with a warning).
"""

from __future__ import annotations

import os
from typing import Any

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""The Fast DDS 3.x and 2.x names of the profile variable."""


def chosen_profile(environ: dict[str, str] | None = None) -> str | None:
    """The profile file the environment names under either variable (3.x's first)."""
    env = os.environ if environ is None else environ
    return next((env[name] for name in PROFILE_VARIABLES if env.get(name)), None)


def use_profile(path: str, environ: dict[str, str] | None = None) -> None:
    """Point both Fast DDS versions at ``path`` (in ``environ``, default os.environ)."""
    env = os.environ if environ is None else environ
    for name in PROFILE_VARIABLES:
        env[name] = path


def profile_launch_actions(default: Any) -> tuple[Any, list[Any]]:
    """For a launch file: the ``fastdds_profile`` argument (the environment's choice under
    either name, else ``default``) and the actions that set both variables to it."""
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.substitutions import EnvironmentVariable, LaunchConfiguration

    fallback = EnvironmentVariable(PROFILE_VARIABLES[1], default_value=default)
    argument = DeclareLaunchArgument(
        "fastdds_profile",
        default_value=EnvironmentVariable(PROFILE_VARIABLES[0], default_value=[fallback]),
        description="Fast DDS profile (the default has a large shared-memory segment); set "
        "under both FASTDDS_ and FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 3.x and 2.x)",
    )
    actions = [
        SetEnvironmentVariable(name, LaunchConfiguration("fastdds_profile"))
        for name in PROFILE_VARIABLES
    ]
    return argument, actions


def localhost_discovery(environ: dict[str, str] | None = None) -> None:
    """Keep DDS discovery on this host (tests, benchmarks), unless the environment already
    chose: ROS_AUTOMATIC_DISCOVERY_RANGE, and on Humble (ROS_DISTRO=humble, which ignores it)
    ROS_LOCALHOST_ONLY as well."""
    env = os.environ if environ is None else environ
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if env.get("ROS_DISTRO") == "humble":
        env.setdefault("ROS_LOCALHOST_ONLY", "1")
