"""The core imports without rclpy, torch or any ROS message package."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import spotvlm_ros.core

BLOCKED = ("rclpy", "torch", "transformers", "cv2", "std_msgs", "sensor_msgs", "spotvlm_msgs")


def test_core_imports_without_ros_or_torch() -> None:
    modules = [m.name for m in pkgutil.iter_modules(spotvlm_ros.core.__path__, "spotvlm_ros.core.")]
    assert len(modules) >= 8
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)
        + "".join(f"import {m}\n" for m in modules)
        + "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
