"""Bad input to the graph is counted and reported, and no node dies; the SVLM node keeps
serving parameter requests while it is busy inferring."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from test.helpers.graph import Probe, logs, node_log, real_frames, running_graph
from test.helpers.models import tiny_model_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "log" / "test-graph"


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.close()


def ingest_diagnostics(probe: Probe, received: list[object]) -> dict[str, str]:
    for array in reversed(received):
        for status in array.status:  # type: ignore[attr-defined]
            if status.name == "camera_ingest: input":
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_bad_frames_are_counted_and_reported_and_no_node_dies(probe: Probe) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    from spotvlm_ros.ros.convert import stamp_of

    diagnostics: list[object] = []
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    log_dir = LOGS / "bad-input"
    good = real_frames(1)[0]
    args = (
        "--model-path",
        str(tiny_model_dir()),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--no-check-lvlm",  # no server there: the graph copes without one
        "--rate",
        "30",
        "--set",
        "svlm_node.max_new_tokens=4",
    )
    with running_graph(log_dir, *args) as runner:
        probe.wait_for_graph()
        small = np.zeros((48, 64, 3), np.uint8)
        now = probe.node.get_clock().now().nanoseconds
        bad = [
            {"encoding": "16UC1"},
            {"encoding": "bayer_rggb8"},
            {"width": 0, "height": 0, "step": 0, "data": b""},
            {"width": 640, "height": 480, "step": 1920, "data": b"\x00" * 1000},  # truncated
            {"width": 8000, "height": 8000, "step": 24000},  # 8000x8000: too large
        ]
        for fields in bad:
            probe.publish_frame(small, **fields)
            time.sleep(0.1)
        for offset_s in (60.0, -3600.0):  # stamped a minute ahead, an hour ago
            msg_stamp = now + int(offset_s * 1e9)
            from spotvlm_ros.ros.convert import rgb_to_image, to_time

            msg = rgb_to_image(small)
            msg.header.stamp = to_time(msg_stamp)
            probe.camera.publish(msg)
            time.sleep(0.1)
        probe.wait_for(
            lambda: int(ingest_diagnostics(probe, diagnostics).get("rejected_bad_image", 0)) >= 5,
            10.0,
            "the rejections in camera_ingest's diagnostics",
        )
        values = ingest_diagnostics(probe, diagnostics)
        probe.wait_for(
            lambda: "rejected_old_stamp" in ingest_diagnostics(probe, diagnostics),
            5.0,
            "the stamp rejections",
        )
        values = ingest_diagnostics(probe, diagnostics)
        assert values["rejected_bad_image"] == "5", values
        assert values["rejected_future_stamp"] == "1", values
        assert values["rejected_old_stamp"] == "1", values
        # a mono8 frame is fine, and so is a good colour frame after all that
        mono = probe.publish_frame(small, encoding="mono8", step=64, data=bytes(48 * 64))
        time.sleep(0.2)
        stamp = probe.publish_frame(good)
        probe.wait_for(
            lambda: stamp in {stamp_of(a.header.stamp) for a in probe.answers},
            15.0,
            "an answer to a good frame after the bad ones",
        )
        assert mono in {stamp_of(a.header.stamp) for a in probe.answers}
        assert runner.poll() is None, logs(log_dir)
    text = node_log(log_dir, "camera_ingest")
    assert "unsupported encoding '16UC1'" in text
    assert "rejected frame" in text
    assert "process has died" not in (log_dir / "runner.log").read_text()


def test_svlm_node_answers_parameter_requests_while_inferring(
    probe: Probe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is held in the middle of a frame (a file gate in the real decoding loop,
    see spotvlm_ros.svlm.hold), so the order of events is certain on any machine: the
    parameter reply comes while the frame is in progress, the answer only after release."""
    from rcl_interfaces.srv import GetParameters

    from spotvlm_ros.ros.convert import stamp_of
    from spotvlm_ros.svlm.hold import HOLD_DIR_VARIABLE

    gate = tmp_path / "gate"
    monkeypatch.setenv(HOLD_DIR_VARIABLE, str(gate))
    log_dir = LOGS / "busy-svlm"
    args = (
        "--model-path",
        str(tiny_model_dir()),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--no-check-lvlm",  # no server there: the graph copes without one
        "--deadline",
        "30",  # a busy machine may be slow to start the frame; that is not under test
        "--set",
        "svlm_node.max_new_tokens=8",
    )
    with running_graph(log_dir, *args):
        probe.wait_for_graph()
        client = probe.node.create_client(GetParameters, "/svlm_node/get_parameters")
        assert client.wait_for_service(timeout_sec=30.0)
        stamp = probe.publish_frame(real_frames(1)[0])
        probe.wait_for(lambda: any(gate.glob("holding-*")), 60.0, "the SVLM to start the frame")
        (holding,) = gate.glob("holding-*")
        future = client.call_async(GetParameters.Request(names=["max_new_tokens", "ggvr"]))
        probe.wait_for(future.done, 30.0, "the parameter reply")
        answered_while_held = [s for s in probe.svlm if stamp_of(s.header.stamp) == stamp]
        (gate / holding.name.replace("holding-", "release-")).touch()
        probe.wait_for(
            lambda: any(stamp_of(s.header.stamp) == stamp for s in probe.svlm),
            60.0,
            "the SVLM result after the release",
        )
        result = next(s for s in probe.svlm if stamp_of(s.header.stamp) == stamp)
        values = [v.integer_value for v in future.result().values[:1]]
    assert values == [8]
    assert answered_while_held == []  # the reply came while the frame was in progress
    assert result.status == 0, result.error
    assert "test gate" in node_log(log_dir, "svlm_node")
