"""camera_ingest takes the camera once the graph's frame listeners, named, have matched: an
extra subscriber of the frames (a recorder, a test probe) does not stand in for one of them.
Two processes over real DDS: camera_ingest, and this test's nodes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test.helpers.graph import Probe, real_frames
from test.helpers.servers import stop_process

pytestmark = pytest.mark.integration

LOG = Path(__file__).resolve().parents[2] / "log" / "test-frame-listeners.log"


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe("frame_listeners_probe", admitted=True)
    yield p
    p.close()


def start_ingest(*params: str) -> subprocess.Popen[bytes]:
    LOG.parent.mkdir(exist_ok=True)
    args = [*(sys.executable, "-m", "spotvlm_ros.nodes.camera_ingest", "--ros-args")]
    for param in ("rate_hz:=30.0", "max_age_s:=0.0", *params):
        args += ["-p", param]
    return subprocess.Popen(args, stdout=LOG.open("wb"), stderr=subprocess.STDOUT)


def feed(probe: Probe, seconds: float) -> None:
    """Camera frames at 10 Hz for ``seconds``."""
    from spotvlm_ros.ros.convert import rgb_to_image

    image = rgb_to_image(real_frames(1)[0], "bgr8")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        image.header.stamp = probe.node.get_clock().now().to_msg()
        probe.camera.publish(image)
        time.sleep(0.1)


def test_a_recorder_does_not_stand_in_for_a_named_listener(probe: Probe) -> None:
    import rclpy

    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros import qos

    ingest = start_ingest("frame_listeners:=[context_manager]", "frame_listeners_wait_s:=120.0")
    listener = None
    try:
        probe.wait_for(
            lambda: probe.node.count_publishers("/spotvlm/frame") >= 1, 60.0, "camera_ingest"
        )
        # only this probe listens: it has matched, and it is not context_manager
        feed(probe, 4.0)
        assert probe.camera.get_subscription_count() == 0, "the camera was taken"
        assert probe.admitted == [], "a frame was admitted before context_manager subscribed"
        # a node of that name subscribes: the camera is taken, frames flow to both
        listener = rclpy.create_node("context_manager")
        got: list[object] = []
        listener.create_subscription(Frame, "/spotvlm/frame", got.append, qos.RESULTS)
        probe.executor.add_node(listener)
        deadline = time.monotonic() + 30.0
        while not got and time.monotonic() < deadline:
            feed(probe, 0.5)
        assert got, "no frame reached context_manager after it subscribed"
        assert probe.admitted, "no frame reached the probe"
    finally:
        stop_process(ingest, signal.SIGINT, 10.0)
        if listener is not None:
            probe.executor.remove_node(listener)
            listener.destroy_node()
    text = LOG.read_text()
    assert "admitting Image from /camera/image_raw" in text, text


def test_a_missing_listener_is_named_when_the_wait_runs_out(probe: Probe) -> None:
    ingest = start_ingest(
        "frame_listeners:=[context_manager,no_such_node]", "frame_listeners_wait_s:=2.0"
    )
    try:
        probe.wait_for(lambda: probe.camera.get_subscription_count() >= 1, 60.0, "camera_ingest")
        deadline = time.monotonic() + 30.0
        while not probe.admitted and time.monotonic() < deadline:
            feed(probe, 0.5)
        assert probe.admitted, "camera_ingest did not take the camera after its wait"
    finally:
        stop_process(ingest, signal.SIGINT, 10.0)
    text = LOG.read_text()
    assert "context_manager, no_such_node not listening on /spotvlm/frame" in text, text


def test_a_namespaced_listener_name_is_refused() -> None:
    ingest = start_ingest("frame_listeners:=[/robot/context_manager]")
    assert ingest.wait(timeout=60.0) != 0
    assert "must be node names without a namespace" in LOG.read_text()
