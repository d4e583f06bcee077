"""/diagnostics as rqt and Foxglove read it: every node reports at 1 Hz, one status per
concern, and the levels mean something (here: a dead cloud, an SVLM that cannot keep up)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from test.helpers.graph import Probe, logs, real_frames, running_graph
from test.helpers.models import tiny_model_dir

pytestmark = pytest.mark.integration
NAMES = (
    "camera_ingest: input",
    "svlm_node: inference",
    "cloud_bridge: LVLM",
    "context_manager: answers",
)


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe("diagnostics_probe", overlays=False)
    yield p
    p.close()


def test_every_node_reports_at_1_hz_with_levels_that_mean_something(
    probe: Probe, tmp_path: Path
) -> None:
    arrays: list[DiagnosticArray] = []
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, 50)
    log_dir = tmp_path / "logs"
    args = (
        "--model-path",
        str(tiny_model_dir()),
        "--base-url",
        "http://127.0.0.1:9/v1",  # nobody answers there
        "--no-check-lvlm",
        # an SVLM that refuses every frame (too large for it): every frame fails
        "--set",
        "svlm_node.max_input_pixels=1000",
        "--set",
        "svlm_node.error_after_s=3.0",
        "--set",
        "cloud_bridge.warn_after_s=3.0",
        "--set",
        "context_manager.warn_after_s=3.0",
    )
    with running_graph(log_dir, *args):
        probe.wait_for_graph(timeout=120.0)
        arrays.clear()
        started = time.monotonic()
        probe.publish_at_rate(real_frames(14), hz=2.0)
        time.sleep(1.5)
        elapsed = time.monotonic() - started
    statuses: dict[str, list[DiagnosticStatus]] = {}
    for array in arrays:
        for s in array.status:
            statuses.setdefault(s.name, []).append(s)
    assert set(NAMES) <= set(statuses), (sorted(statuses), logs(log_dir)[-3000:])
    for name in NAMES:  # at 1 Hz (half of that is enough here: the machine may be loaded)
        assert len(statuses[name]) >= elapsed / 2, (name, len(statuses[name]), elapsed)
        assert all(s.hardware_id for s in statuses[name])

    def levels(name: str) -> set[bytes]:
        return {s.level for s in statuses[name]}

    def last(name: str, level: bytes) -> DiagnosticStatus:
        return [s for s in statuses[name] if s.level == level][-1]

    assert DiagnosticStatus.WARN in levels("cloud_bridge: LVLM")
    assert "no LVLM answer for" in last("cloud_bridge: LVLM", DiagnosticStatus.WARN).message
    assert DiagnosticStatus.ERROR in levels("svlm_node: inference")
    error = last("svlm_node: inference", DiagnosticStatus.ERROR)
    assert "every frame dropped or failed" in error.message
    assert "exceeds the limit of 1000 pixels" in error.message  # why, as the node saw it
    assert DiagnosticStatus.WARN in levels("context_manager: answers")
    ingest = statuses["camera_ingest: input"][-3]
    values = {kv.key: kv.value for kv in ingest.values}
    assert ingest.level == DiagnosticStatus.OK and float(values["admitted_rate_hz"]) > 0.5
    keys = {kv.key for s in statuses["cloud_bridge: LVLM"] for kv in s.values}
    assert {"latency_p95_s", "failing_for_s", "outcome_connection"} <= keys
