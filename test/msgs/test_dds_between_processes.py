"""A spotvlm_msgs message crosses real DDS between two separate rclpy processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("spotvlm_msgs.msg", reason="spotvlm_msgs not built: run scripts/dev setup")

from rclpy.serialization import deserialize_message

from spotvlm_msgs.msg import LvlmResult
from test.helpers.dds_peer import sample

ROOT = Path(__file__).resolve().parents[2]


def _peer(role: str, topic: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "test.helpers.dds_peer", role, topic, "20"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_lvlm_result_with_rois_crosses_dds_intact() -> None:
    topic = f"/spotvlm_test/lvlm_result_{os.getpid()}"
    subscriber = _peer("sub", topic)
    publisher = _peer("pub", topic)
    try:
        _, pub_err = publisher.communicate(timeout=60)
        sub_out, sub_err = subscriber.communicate(timeout=60)
    finally:
        for proc in (publisher, subscriber):
            if proc.poll() is None:
                proc.kill()
    assert publisher.returncode == 0, pub_err
    assert subscriber.returncode == 0, sub_err
    received = deserialize_message(bytes.fromhex(sub_out.strip()), LvlmResult)
    assert received == sample()
    assert len(received.rois) == 3
    assert received.rois[1].box.x_offset == 640
    assert received.header.stamp.nanosec == 456_000_000
