"""spotvlm_ros.ros.distro: the Fast DDS profile under the names of both Fast DDS versions."""

from __future__ import annotations

from spotvlm_ros.ros.distro import PROFILE_VARIABLES, chosen_profile, use_profile


def test_either_name_is_read_and_both_are_written() -> None:
    assert chosen_profile({}) is None
    assert chosen_profile({"FASTRTPS_DEFAULT_PROFILES_FILE": "/a.xml"}) == "/a.xml"
    both = {"FASTDDS_DEFAULT_PROFILES_FILE": "/new.xml", "FASTRTPS_DEFAULT_PROFILES_FILE": "/o"}
    assert chosen_profile(both) == "/new.xml"  # Fast DDS 3.x's name first
    env: dict[str, str] = {}
    use_profile("/p.xml", env)
    assert env == dict.fromkeys(PROFILE_VARIABLES, "/p.xml")


def test_discovery_stays_on_this_host_on_every_distro() -> None:
    from spotvlm_ros.ros.distro import localhost_discovery

    jazzy: dict[str, str] = {"ROS_DISTRO": "jazzy"}
    localhost_discovery(jazzy)
    assert jazzy == {"ROS_DISTRO": "jazzy", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    humble: dict[str, str] = {"ROS_DISTRO": "humble"}  # Humble ignores the range variable
    localhost_discovery(humble)
    assert humble["ROS_LOCALHOST_ONLY"] == "1"
    chosen = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    localhost_discovery(chosen)
    assert chosen == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}  # the user's choice stands
