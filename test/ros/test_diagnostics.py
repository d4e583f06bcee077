"""/diagnostics as rqt and Foxglove read it: every node reports at 1 Hz, one status per
concern, and the levels mean something (here: a dead cloud, an SVLM that cannot keep up)."""

from __future__ import annotations

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
    p = Probe("diagnostics_probe", overlays=False, admitted=True)
    yield p
    p.close()


def test_every_node_reports_with_levels_that_mean_something(probe: Probe, tmp_path: Path) -> None:
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

    def statuses() -> dict[str, list[DiagnosticStatus]]:
        by_name: dict[str, list[DiagnosticStatus]] = {}
        for array in list(arrays):
            for s in array.status:
                by_name.setdefault(s.name, []).append(s)
        return by_name

    def reached(name: str, level: bytes) -> bool:
        return any(s.level == level for s in statuses().get(name, []))

    with running_graph(log_dir, *args):
        probe.wait_for_graph(timeout=120.0)
        arrays.clear()
        stamps = probe.publish_at_rate(real_frames(14), hz=2.0)
        # the levels the failures lead to, once their 3 s have passed in the nodes' time
        for name, level in (
            ("cloud_bridge: LVLM", DiagnosticStatus.WARN),
            ("svlm_node: inference", DiagnosticStatus.ERROR),
            ("context_manager: answers", DiagnosticStatus.WARN),
        ):
            probe.wait_for(lambda n=name, lv=level: reached(n, lv), 60.0, f"{name} at {level!r}")
        # every admitted frame answered (a best-effort camera frame may be lost on the way)
        probe.wait_for(lambda: probe.admitted, 30.0, "admitted frames")
        probe.wait_for(
            lambda: set(probe.admitted) & set(stamps) <= set(probe.answer_arrivals),
            60.0,
            "an answer per admitted frame",
        )
        # every node goes on reporting: a status from each after all the frames were answered
        seen = {name: len(statuses().get(name, [])) for name in NAMES}
        probe.wait_for(
            lambda: all(len(statuses().get(n, [])) > seen[n] for n in NAMES),
            30.0,
            "one more status from every node",
        )
    by_name = statuses()
    assert set(NAMES) <= set(by_name), (sorted(by_name), logs(log_dir)[-3000:])
    for name in NAMES:
        assert all(s.hardware_id for s in by_name[name])

    def levels(name: str) -> set[bytes]:
        return {s.level for s in by_name[name]}

    def last(name: str, level: bytes) -> DiagnosticStatus:
        return [s for s in by_name[name] if s.level == level][-1]

    assert DiagnosticStatus.WARN in levels("cloud_bridge: LVLM")
    assert "no LVLM answer for" in last("cloud_bridge: LVLM", DiagnosticStatus.WARN).message
    assert DiagnosticStatus.ERROR in levels("svlm_node: inference")
    error = last("svlm_node: inference", DiagnosticStatus.ERROR)
    assert "every frame dropped or failed" in error.message
    assert "exceeds the limit of 1000 pixels" in error.message  # why, as the node saw it
    assert DiagnosticStatus.WARN in levels("context_manager: answers")
    # camera_ingest itself is fine: its count of admitted frames is what this probe saw
    admitted = len(set(probe.admitted) & set(stamps))
    ingest = [
        s
        for s in by_name["camera_ingest: input"]
        if {kv.key: kv.value for kv in s.values}.get("admitted") == str(admitted)
    ]
    assert any(s.level == DiagnosticStatus.OK for s in ingest), by_name[NAMES[0]][-3:]
    keys = {kv.key for s in by_name["cloud_bridge: LVLM"] for kv in s.values}
    assert {"latency_p95_s", "failing_for_s", "outcome_connection"} <= keys
