"""The evaluator says when the ground truth is of another task or vocabulary (a gesture bag
scored as objects), instead of scoring it as empty in silence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def evaluator() -> Iterator[Any]:
    import rclpy

    from spotvlm_ros.nodes.evaluator import Evaluator

    ours = not rclpy.ok()  # another test of this process may have started rclpy
    if ours:
        rclpy.init()
    node = Evaluator()
    yield node
    node.destroy_node()
    if ours:
        rclpy.shutdown()


def test_ground_truth_of_another_task_is_said(
    evaluator: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    from spotvlm_msgs.msg import GroundTruth

    # the evaluator scores objects (bdd100k): a car is fine
    first = GroundTruth(task="objects", labels=["car"])
    first.header.stamp.sec = 1
    evaluator._on_truth(first)
    assert evaluator.truths_mismatched == 0
    # a HaGRID bag's ground truth: said, counted, and scored as an empty truth
    other = GroundTruth(task="gesture", labels=["call"])
    other.header.stamp.sec = 2
    evaluator._on_truth(other)
    assert evaluator.truths_mismatched == 1
    err = capfd.readouterr().err
    assert "labels ['call'] outside the objects task's bdd100k vocabulary" in err
    assert "set task:= and vocabulary:= to match it" in err
    assert evaluator.log.report()["frames_with_truth"] == 2
