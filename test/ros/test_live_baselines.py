"""The baselines ADAS and LAECIPS in the live graph (``method:=adas|laecips``): separate
processes over real DDS, the tiny SVLM and the local LVLM server (detector backend)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from test.helpers.graph import Probe, logs, real_frames, running_graph
from test.helpers.models import tiny_model_dir
from test.helpers.servers import lvlm_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "log" / "test-live-baselines"
SOURCE_SVLM, SOURCE_LVLM = 1, 2
DEADLINE_S = 2.0  # as test_graph.py: the sources stay determined on a loaded machine


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    found = real_frames(8)
    if len(found) < 8:
        pytest.skip("needs the BDD100K frames of ../shared/data")
    return found


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe(overlays=False)
    yield p
    p.close()


def graph_args(url: str, method: str, *extra: str) -> tuple[str, ...]:
    return (
        "--model-path",
        str(tiny_model_dir()),
        "--base-url",
        url,
        "--method",
        method,
        "--deadline",
        str(DEADLINE_S),
        "--set",
        "svlm_node.max_new_tokens=8",
        *extra,
    )


def by_stamp(messages: list[object]) -> dict[int, object]:
    from spotvlm_ros.ros.convert import stamp_of

    return {stamp_of(m.header.stamp): m for m in messages}  # type: ignore[attr-defined]


def wait_answered(probe: Probe, stamps: list[int], log_dir: Path) -> None:
    try:
        probe.wait_for(
            lambda: set(stamps) <= set(by_stamp(probe.answers)), 90.0, "an answer per frame"
        )
    except TimeoutError:
        pytest.fail(f"{len(probe.answers)} answers for {len(stamps)} frames\n{logs(log_dir)}")


def test_laecips_asks_the_cloud_after_an_unsure_svlm_and_its_answer_replaces_it(
    frames: list[np.ndarray], probe: Probe
) -> None:
    """The random SVLM is unsure of every frame (confidence ~1e-5 < 0.5): cloud_bridge
    uploads nothing when a frame arrives, only after the SVLM's result asks for it, and
    context_manager waits for that answer although the SVLM's came first."""
    log_dir = LOGS / "laecips"
    with (
        lvlm_server("--latency", "0.2") as url,
        running_graph(log_dir, *graph_args(url, "laecips")),
    ):
        probe.wait_for_graph(warm_up=frames[0])
        stamps = probe.publish_at_rate(frames[:6], hz=1.0)
        wait_answered(probe, stamps, log_dir)
        probe.wait_for(lambda: len(by_stamp(probe.svlm).keys() & set(stamps)) == 6, 30.0, "SVLM")
        svlm = {s: r for s, r in by_stamp(probe.svlm).items() if s in stamps}
        answered = {s: r for s, r in svlm.items() if r.status == 0}  # type: ignore[attr-defined]
        assert answered, logs(log_dir)
        for result in answered.values():
            confidence = result.confidence  # type: ignore[attr-defined]
            assert 0.0 < confidence <= 1.0
            assert result.cloud_requested == (confidence < 0.5)  # type: ignore[attr-defined]
        requested = {s for s, r in answered.items() if r.cloud_requested}  # type: ignore[attr-defined]
        assert requested, "the random SVLM is sure of every frame: the test shows nothing"
        probe.wait_for(lambda: requested <= set(by_stamp(probe.lvlm)), 30.0, "the cloud's answers")
        # only the frames the SVLM asked about went to the cloud
        asked = set(by_stamp(probe.lvlm)) & set(stamps)
        assert asked == requested, (sorted(asked), sorted(requested))
        answers = by_stamp(probe.answers)
        # the SVLM answered first, yet the cloud's in-time answer won: the arbiter waited
        sources = [answers[s].source for s in requested]  # type: ignore[attr-defined]
        assert SOURCE_LVLM in sources, (sources, logs(log_dir))


def test_adas_stops_offloading_once_the_cloud_is_predicted_late(
    frames: list[np.ndarray], probe: Probe
) -> None:
    """A 3 s cloud against a 2 s deadline: with no round trip seen yet a frame is offloaded
    (the warm-up frame); once its answer shows the cloud late, the frames stay on board (no
    probe within the run) and the SVLM answers them."""
    log_dir = LOGS / "adas"
    with (
        lvlm_server("--latency", "3.0") as url,
        running_graph(
            log_dir, *graph_args(url, "adas", "--set", "cloud_bridge.adas_probe_s=600.0")
        ),
    ):
        probe.wait_for_graph(warm_up=frames[0])
        # the warm-up frame went to the cloud; cloud_bridge fed its round trip to the
        # prediction before publishing its result
        probe.wait_for(lambda: bool(probe.lvlm), 60.0, "the first round trip")
        assert probe.lvlm[0].latency > DEADLINE_S
        stamps = probe.publish_at_rate(frames[1:5], hz=1.0)
        wait_answered(probe, stamps, log_dir)
        assert not set(by_stamp(probe.lvlm)) & set(stamps), "offloaded to a late cloud"
        answers = by_stamp(probe.answers)
        assert [answers[s].source for s in stamps] == [SOURCE_SVLM] * 4  # type: ignore[attr-defined]
        probe.wait_for(lambda: set(stamps) <= set(by_stamp(probe.svlm)), 30.0, "SVLM results")
        svlm = by_stamp(probe.svlm)
        assert all(svlm[s].status == 0 for s in stamps)  # type: ignore[attr-defined]
