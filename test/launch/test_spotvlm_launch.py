"""launch_pytest tests of launch/spotvlm.launch.py: the same end-to-end path as the
integration tests, started by `launch` itself.

launch, launch_ros and launch_pytest come with a ROS 2 install (apt) but are not on PyPI:
where they cannot be imported these tests are skipped with the reason. The tests carry
launch_pytest's own ``launch`` mark, so ``pytest -m launch`` selects them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest",
    reason="launch_pytest is not installed (it comes with a ROS 2 install, not from PyPI)",
)
pytest.importorskip("launch_ros", reason="launch_ros is not installed")

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402

from test.helpers.graph import Probe, real_frames  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402
from test.helpers.servers import free_port  # noqa: E402

PORT = free_port()


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("launch_test_probe")
    yield p
    p.close()


@launch_pytest.fixture(scope="module")
def spotvlm_launch() -> launch.LaunchDescription:
    """spotvlm.launch.py with the tiny SVLM and the local LVLM server at 0.3 s latency."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    source = PythonLaunchDescriptionSource(
        [FindPackageShare("spotvlm_ros"), "/launch/spotvlm.launch.py"]
    )
    arguments = {
        "model_path": str(tiny_model_dir()),
        "start_server": "true",
        "server_port": str(PORT),
        "server_latency": "0.3",
        "base_url": f"http://127.0.0.1:{PORT}/v1",
        "lvlm_model": "detector",
    }
    return launch.LaunchDescription(
        [
            IncludeLaunchDescription(source, launch_arguments=arguments.items()),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.mark.launch(fixture=spotvlm_launch)
def test_every_frame_gets_one_answer_mostly_from_the_fast_cloud(probe: Probe) -> None:
    from spotvlm_ros.ros.convert import stamp_of

    probe.wait_for(_server_ready, 120.0, "the LVLM server")
    frames = real_frames(8)
    probe.wait_for_graph(timeout=120.0, warm_up=frames[0])
    stamps = probe.publish_at_rate(frames, hz=2.0)
    probe.wait_for(
        lambda: set(stamps) <= {stamp_of(a.header.stamp) for a in probe.answers},
        20.0,
        "an answer for every frame",
    )
    answers = [a for a in probe.answers if stamp_of(a.header.stamp) in set(stamps)]
    assert len(answers) == len(stamps)
    assert sum(a.source == 2 for a in answers) >= 5, [a.source for a in answers]
    overlays = lambda: {stamp_of(o.header.stamp) for o in probe.overlays}  # noqa: E731
    probe.wait_for(lambda: set(stamps) <= overlays(), 10.0, "an overlay for every frame")


def _server_ready() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=1):
            return True
    except OSError:
        return False


def test_launch_files_are_installed() -> None:
    share = Path(FindPackageShare("spotvlm_ros").find("spotvlm_ros"))
    assert (share / "launch" / "spotvlm.launch.py").is_file()
    assert (share / "launch" / "replay.launch.py").is_file()
