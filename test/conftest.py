"""Test-session settings shared by every test: an isolated ROS 2 domain."""

from __future__ import annotations

import os

# Every pytest session gets its own DDS domain so that parallel runs, leftover processes
# and a developer's running graph never cross-talk with the processes a test starts.
# Set before rclpy is imported anywhere; child processes inherit it.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
