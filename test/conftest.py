"""Test-session settings shared by every test: an isolated ROS 2 domain."""

from __future__ import annotations

import os

from spotvlm_ros.ros.distro import localhost_discovery

# Every pytest session gets its own DDS domain so that parallel runs, leftover processes
# and a developer's running graph never cross-talk with the processes a test starts.
# Set before rclpy is imported anywhere; child processes inherit it.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
localhost_discovery()


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: object) -> None:
    """Under CI=true a skipped test fails the run: what CI cannot run is not tested."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    skipped = terminalreporter.stats.get("skipped", [])  # type: ignore[attr-defined]
    if skipped:
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"CI=true: {len(skipped)} test(s) skipped; CI requires every test to run "
            "(see the skip reasons above)",
            red=True,
        )


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Turn skips into a failing exit status under CI=true (see pytest_terminal_summary)."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")  # type: ignore[attr-defined]
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1  # type: ignore[attr-defined]
