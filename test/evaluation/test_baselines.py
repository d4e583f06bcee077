"""The paper's baselines in the replay, each on a short sequence whose outcome is worked out
by hand: Distributed VLM, ADAS (the stated proxy) and LAECIPS."""

from __future__ import annotations

import numpy as np
import pytest

from spotvlm_ros.core.baselines import DistributedVlmConfig, LatencyAwareOffload, is_hard
from spotvlm_ros.core.engine import SvlmInputs
from spotvlm_ros.core.types import NS_PER_S, Source, Stamp
from spotvlm_ros.core.vocab import vocabulary
from spotvlm_ros.evaluation.replay import (
    METHODS,
    Frame,
    LvlmAnswer,
    ReplayConfig,
    SvlmAnswer,
    replay,
)

VOCAB = vocabulary("bdd100k")
START = 100 * NS_PER_S


def frames(n: int, fps: float = 1.0, size: tuple[int, int] = (448, 448)) -> list[Frame]:
    blank = np.zeros((size[1], size[0], 3), np.uint8)
    return [
        Frame(str(i), START + round(i / fps * NS_PER_S), lambda: blank, frozenset({"car"}))
        for i in range(n)
    ]


class Svlm:
    """Says 'a bus' (wrong: every truth is car) with a scripted confidence per frame."""

    def __init__(self, confidence: list[float] | None = None) -> None:
        self.confidence = confidence

    def reset(self) -> None:
        pass

    def answer(
        self, name: str, image: np.ndarray, stamp: Stamp, question: str, inputs: SvlmInputs
    ) -> SvlmAnswer:
        sure = self.confidence[int(name)] if self.confidence else 1.0
        return SvlmAnswer("a bus", 0.3, 252, 252, sure)


class Lvlm:
    """Says 'a car' (right), and counts the frames it was asked about."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
        self.asked.append(int(name))
        return LvlmAnswer("a car", frozenset({"car"}), ())


def finals(events: list[object]) -> dict[int, tuple[str, float]]:
    """Frame -> (source of its final answer, latency)."""
    out = {}
    for e in events:
        if getattr(e, "kind", "") == "final":
            i = round((e.stamp - START) / NS_PER_S)  # type: ignore[attr-defined]
            out[i] = (Source(e.source).name, round(e.latency, 3))  # type: ignore[attr-defined]
    return out


def test_distributed_vlm_answers_after_encoder_upload_and_cloud() -> None:
    # 448 x 448 -> 16 x 16 merged tokens x 8192 x 2 bytes = 4 MiB = 33.55 Mbit: 0.3355 s at
    # 100 Mbit/s; with the 0.35 s encoder, 0.6855 s before the cloud's LLM
    config = DistributedVlmConfig()
    assert config.feature_bytes(448, 448) == 16 * 16 * 8192 * 2
    assert config.edge_seconds(448, 448) == pytest.approx(0.35 + 4 * 2**20 * 8 / 1e8)
    # a larger frame is taken at max_pixels: 1600 x 900 -> 597 x 336 -> 21 x 12 tokens
    assert config.feature_bytes(1600, 900) == 21 * 12 * 8192 * 2
    lvlm = Lvlm()
    edge = config.edge_seconds(448, 448)
    # cloud 0.2 s: every answer at 0.8855 s < 1 s, from the cloud; no SVLM runs
    log, events = replay(frames(3), METHODS["distributed_vlm"], lambda i: 0.2, None, lvlm, VOCAB)
    assert finals(events) == {i: ("LVLM", round(edge + 0.2, 3)) for i in range(3)}
    assert lvlm.asked == [0, 1, 2]
    assert log.report()["scores"]["final"]["micro_f1"] == 1.0
    # cloud 0.5 s: 1.1855 s > 1 s: every frame misses its deadline
    _, events = replay(frames(3), METHODS["distributed_vlm"], lambda i: 0.5, None, Lvlm(), VOCAB)
    assert {source for source, _ in finals(events).values()} == {"NONE"}


def test_distributed_vlms_encoder_takes_the_newest_frame() -> None:
    # frames every 0.25 s, the encoder busy 0.6855 s: frame 0 at 0, then the newest waiting
    # when it is free (frame 2 at 0.6855; frame 1 superseded), then frame 3 would start at
    # 1.371 s, 0.621 s after its stamp: still within the deadline
    lvlm = Lvlm()
    replay(frames(4, fps=4.0), METHODS["distributed_vlm"], lambda i: 0.1, None, lvlm, VOCAB)
    assert lvlm.asked == [0, 2, 3]


def test_the_adas_proxy_offloads_only_while_the_cloud_is_in_time() -> None:
    offload = LatencyAwareOffload(deadline_s=1.0, alpha=0.5, probe_s=5.0)
    s = NS_PER_S
    assert offload.decide(0)  # nothing observed: the cloud is tried
    offload.observe(3.0)
    assert offload.predicted_s == 3.0
    assert not offload.decide(1 * s)  # predicted late, and the last upload 1 s ago
    assert offload.decide(5 * s)  # a probe, 5 s after the last upload
    offload.observe(0.4)  # the cloud is fast again: 0.5 * 0.4 + 0.5 * 3.0 = 1.7 s
    assert offload.predicted_s == pytest.approx(1.7)
    assert not offload.decide(6 * s)
    offload.observe(0.4)  # 1.05 s
    offload.observe(0.4)  # 0.725 s: in time
    assert offload.decide(7 * s)


def test_adas_in_the_replay() -> None:
    # 1 fps, cloud 3 s, max_in_flight 2: frames 0 and 1 go up (nothing observed yet);
    # frame 2 stays on board, two requests being in flight; the first answer comes back at
    # 3 s and the prediction is then 3 s > 1 s, so frames 3-5, 7 and 8 stay on board (the
    # last upload was frame 1 at 1 s) and frame 6 is the probe (6 - 1 = 5 s). Offloading is
    # either/or: an offloaded frame's answer is the cloud's, 3 s late, so it has none in
    # time; the others are the SVLM's. No context transfer.
    lvlm = Lvlm()
    _, events = replay(frames(9), METHODS["adas"], lambda i: 3.0, Svlm(), lvlm, VOCAB)
    assert lvlm.asked == [0, 1, 6]
    sources = {i: source for i, (source, _) in finals(events).items()}
    assert sources == {i: "NONE" if i in (0, 1, 6) else "SVLM" for i in range(9)}
    assert all(not getattr(e, "lvlm_history", ()) for e in events)
    # a fast cloud (0.5 s): every frame goes up, and every final answer is the cloud's
    lvlm = Lvlm()
    _, events = replay(frames(5), METHODS["adas"], lambda i: 0.5, Svlm(), lvlm, VOCAB)
    assert lvlm.asked == [0, 1, 2, 3, 4]
    assert {source for source, _ in finals(events).values()} == {"LVLM"}


def test_laecips_sends_what_the_svlm_is_unsure_of() -> None:
    assert is_hard(0.2, 0.5) and not is_hard(0.5, 0.5)
    sure = [0.9, 0.2, 0.8, 0.1]  # frames 1 and 3 are hard (below 0.5)
    config = ReplayConfig(laecips_threshold=0.5)
    # cloud 0.5 s: a hard frame is sent when the SVLM finishes (0.3 s after its stamp), its
    # answer arrives at 0.8 s < 1 s and replaces the SVLM's; easy frames keep the SVLM's
    lvlm = Lvlm()
    log, events = replay(
        frames(4), METHODS["laecips"], lambda i: 0.5, Svlm(sure), lvlm, VOCAB, config
    )
    assert lvlm.asked == [1, 3]
    assert finals(events) == {
        0: ("SVLM", 0.3),
        1: ("LVLM", 0.8),
        2: ("SVLM", 0.3),
        3: ("LVLM", 0.8),
    }
    assert log.report()["scores"]["final"]["exact_match"] == 0.5
    # cloud 2 s: the hard frames' cloud answers come at 2.3 s; at the deadline the SVLM's
    # answer stands (the frame waited for the cloud until then)
    _, events = replay(
        frames(4), METHODS["laecips"], lambda i: 2.0, Svlm(sure), Lvlm(), VOCAB, config
    )
    assert finals(events) == {
        0: ("SVLM", 0.3),
        1: ("SVLM", 0.3),
        2: ("SVLM", 0.3),
        3: ("SVLM", 0.3),
    }


def test_adas_treats_a_failing_cloud_as_a_late_one() -> None:
    # every request fails at once: the first failure (frame 0, at 0 s) is observed as twice
    # the deadline, so frames 1-4 stay on board and frame 5 is the next probe
    class Failing(Lvlm):
        def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
            self.asked.append(int(name))
            return LvlmAnswer("", frozenset(), (), error="connection refused")

    lvlm = Failing()
    replay(frames(7), METHODS["adas"], lambda i: 0.0, Svlm(), lvlm, VOCAB)
    assert lvlm.asked == [0, 5]
