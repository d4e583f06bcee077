"""The LVLM API key stays secret: a canary key is planted, the server rejects it (so it
travels through every error path), and no output of the graph carries it."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from test.helpers.graph import ROOT, Probe, real_frames, running_graph
from test.helpers.models import tiny_model_dir
from test.helpers.servers import lvlm_server

pytestmark = pytest.mark.integration
CANARY = f"sk-canary-{uuid.uuid4().hex}"


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe("secrets_probe")
    yield p
    p.close()


def test_a_planted_api_key_appears_in_no_log_message_report_or_parameter(
    probe: Probe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rosidl_runtime_py import message_to_yaml

    from spotvlm_ros.ros.convert import stamp_of

    monkeypatch.setenv("SPOTVLM_CANARY_KEY", CANARY)  # the graph's (wrong) key
    diagnostics: list[DiagnosticArray] = []
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    log_dir = tmp_path / "logs"
    server_key = {"SPOTVLM_SERVER_KEY": "the-right-key"}
    with (
        lvlm_server(
            "--latency", "0.1", "--api-key-env", "SPOTVLM_SERVER_KEY", env=server_key
        ) as url,
        running_graph(
            log_dir,
            "--model-path",
            str(tiny_model_dir()),
            "--base-url",
            url,
            "--api-key-env",
            "SPOTVLM_CANARY_KEY",
            "--evaluate",
            "--report-dir",
            str(tmp_path / "report"),
            "--set",
            "svlm_node.max_new_tokens=4",
        ),
    ):
        frames = real_frames(4)
        probe.wait_for_graph(warm_up=frames[0])
        stamps = probe.publish_at_rate(frames, hz=2.0)
        probe.wait_for(
            lambda: set(stamps) <= {stamp_of(r.header.stamp) for r in probe.lvlm},
            20.0,
            "an LVLM result per frame",
        )
        dump = subprocess.run(
            ["ros2", "param", "dump", "/cloud_bridge", "--no-daemon", "--spin-time", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
        )
        assert "api_key_env: SPOTVLM_CANARY_KEY" in dump.stdout, dump.stdout + dump.stderr
        probe.wait_for(lambda: len(diagnostics) >= 3, 10.0, "diagnostics")
    # the key went out and was refused: the error path was taken
    rejected = [r for r in probe.lvlm if r.status != 0]
    assert rejected and all("401" in r.error or "invalid" in r.error for r in rejected), [
        r.error for r in probe.lvlm
    ]
    outputs = {
        "lvlm results": "\n".join(message_to_yaml(r) for r in probe.lvlm),
        "answers": "\n".join(message_to_yaml(a) for a in probe.answers),
        "diagnostics": "\n".join(message_to_yaml(d) for d in diagnostics),
        "parameter dump": dump.stdout + dump.stderr,
    }
    files = [*log_dir.rglob("*"), *(tmp_path / "report").rglob("*")]
    files += list((ROOT / "log").glob("lvlm-server-*.log"))
    for path in files:
        if path.is_file():
            outputs[str(path)] = path.read_text(errors="replace")
    assert len(outputs) > 6, sorted(outputs)
    leaks = [name for name, text in outputs.items() if CANARY in text]
    assert not leaks, f"the API key appears in {leaks}"
