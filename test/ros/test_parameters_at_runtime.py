"""`ros2 param set` on a running node says what it does: every parameter is read once, so
a start-up parameter is refused with the reason, and svlm_node's model parameters, read at
each configure, are accepted with a warning that they apply at the next configure."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from test.helpers.graph import Probe
from test.helpers.models import tiny_model_dir
from test.helpers.servers import stop_process

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def set_parameter(probe: Probe, node: str, name: str, value: Any) -> Any:
    """Set one parameter through the node's own service; returns its SetParametersResult."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, f"/{node}/set_parameters")
    assert client.wait_for_service(timeout_sec=60.0), node
    future = client.call_async(
        SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    )
    probe.wait_for(future.done, 30.0, f"{node}'s reply to setting {name}")
    return future.result().results[0]


def start(module: str, log: Path, *parameters: str) -> subprocess.Popen[bytes]:
    ros_args = [a for p in parameters for a in ("-p", p)]
    return subprocess.Popen(
        [sys.executable, "-m", f"spotvlm_ros.nodes.{module}", "--ros-args", *ros_args],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def test_a_start_up_parameter_is_refused_and_a_configure_one_is_said_to_wait(
    tmp_path: Path,
) -> None:
    from test.ros.test_svlm_lifecycle import change

    svlm_log, ingest_log = tmp_path / "svlm.log", tmp_path / "ingest.log"
    svlm = start("svlm_node", svlm_log, f"model_path:={tiny_model_dir()}", "max_new_tokens:=4")
    ingest = start("camera_ingest", ingest_log)
    probe = Probe("param_probe", overlays=False, camera=False)
    try:
        probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 60.0, "svlm_node up")
        # unconfigured: read at configure, nothing to say
        assert set_parameter(probe, "svlm_node", "max_new_tokens", 6).successful
        change(probe, "configure")
        change(probe, "activate")
        accepted = set_parameter(probe, "svlm_node", "model_path", "/elsewhere/Qwen2.5-VL-3B")
        assert accepted.successful
        refused = set_parameter(probe, "svlm_node", "error_after_s", 5.0)
        assert not refused.successful and "read at start-up only" in refused.reason
        refused = set_parameter(probe, "camera_ingest", "rate_hz", 5.0)
        assert not refused.successful, refused
        assert "camera_ingest: rate_hz read at start-up only" in refused.reason
    finally:
        probe.close()
        stop_process(svlm, signal.SIGINT, 20.0)
        stop_process(ingest, signal.SIGINT, 20.0)
    text = svlm_log.read_text()
    assert "model_path takes effect at the next configure" in text, text[-2000:]
    assert "max_new_tokens takes effect" not in text  # set while unconfigured: no warning
    assert "refused to set camera_ingest: rate_hz" in ingest_log.read_text()


def test_a_bad_model_path_at_a_later_configure_keeps_the_graph_running(tmp_path: Path) -> None:
    """The operator sets a model_path that does not exist and cycles svlm_node: configure
    fails and says why, the rest of the graph goes on answering (invalid frames, no SVLM),
    and with the path fixed, configure and activate bring the SVLM's answers back."""
    from spotvlm_ros.ros.convert import stamp_of
    from test.helpers.graph import real_frames, running_graph

    log_dir = tmp_path / "logs"
    probe = Probe("reconfigure_probe", overlays=False)
    args = ("--model-path", str(tiny_model_dir()), "--no-cloud", "--deadline", "5.0")
    try:
        with running_graph(log_dir, *args, "--set", "svlm_node.max_new_tokens=4") as runner:
            frame = real_frames(1)[0]
            probe.wait_for_graph(warm_up=frame, frame_listeners=2)
            assert set_parameter(probe, "svlm_node", "model_path", "/no/such/model").successful
            assert probe.transition("deactivate") and probe.transition("cleanup")
            assert not probe.transition("configure")
            stamp = probe.wait_until_answered(frame, 60.0)  # the graph answers on
            assert runner.poll() is None
            (answer,) = [a for a in probe.answers if stamp_of(a.header.stamp) == stamp]
            assert answer.source == 0 and not answer.deadline_met  # no model: invalid
            assert set_parameter(probe, "svlm_node", "model_path", str(tiny_model_dir())).successful
            assert probe.transition("configure") and probe.transition("activate")
            probe.svlm.clear()
            probe.wait_until_answered(frame, 60.0)
            probe.wait_for(lambda: any(r.status == 0 for r in probe.svlm), 60.0, "SVLM answers")
            assert runner.poll() is None
    finally:
        probe.close()
    launch_log = (log_dir / "runner.log").read_text()
    assert "svlm_node could not configure again" in launch_log, launch_log[-3000:]
    assert "model_path '/no/such/model' does not exist" in (log_dir / "runner.log").read_text() + (
        "".join(p.read_text() for p in log_dir.glob("svlm_node*.log"))
    )
