"""spotvlm_ros: context transfer between an on-board SVLM and a cloud LVLM, for ROS 2."""

__version__ = "0.1.0"
