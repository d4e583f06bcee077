"""`spotvlm_doctor`: report what this ROS 2 / Python environment offers spotvlm_ros."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

CHECKS: tuple[tuple[str, str, bool], ...] = (
    # (module, what it is for, required)
    ("rclpy", "ROS 2 client library", True),
    ("spotvlm_msgs.msg", "spotvlm_ros messages (colcon build src/spotvlm_msgs)", True),
    ("sensor_msgs.msg", "camera images", True),
    ("visualization_msgs.msg", "ImageMarker overlays", True),
    ("diagnostic_msgs.msg", "cloud bridge diagnostics", True),
    ("numpy", "image handling", True),
    ("cv2", "image decoding and overlays (opencv-python)", True),
    ("torch", "SVLM inference", False),
    ("transformers", "Qwen2.5-VL", False),
    ("openai", "cloud client", False),
    ("onnxruntime", "detector backend of the local LVLM server", False),
    ("rosbags", "bag converter and bag player", False),
    ("launch_ros", "ros2 launch files", False),
    ("launch_pytest", "launch tests", False),
    ("cv_bridge", "not needed: images are converted with numpy", False),
)


def main(argv: list[str] | None = None) -> int:
    """Print one line per dependency; exit 1 when a required one is missing."""
    del argv
    missing_required = []
    for module, purpose, required in CHECKS:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        mark = "ok     " if found else ("MISSING" if required else "absent ")
        print(f"{mark} {module:24s} {purpose}")
        if required and not found:
            missing_required.append(module)
    print(f"RMW_IMPLEMENTATION={os.environ.get('RMW_IMPLEMENTATION', '(default)')}")
    print(f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '(default 0)')}")
    if missing_required:
        print(
            "missing: " + ", ".join(missing_required) + " -- run `scripts/dev setup` and "
            "`source env.sh`, or source your ROS 2 workspace",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
