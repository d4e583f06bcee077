"""The offline evaluator on a scripted toy sequence (figures computed by hand), and its
agreement with the live evaluator node fed the same events over DDS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spotvlm_ros.core.engine import SvlmInputs
from spotvlm_ros.core.types import NS_PER_S, Box, Roi, Stamp
from spotvlm_ros.core.vocab import vocabulary
from spotvlm_ros.evaluation.replay import METHODS, Frame, LvlmAnswer, SvlmAnswer, replay

VOCAB = vocabulary("bdd100k")
TRUTH = [{"car"}, {"car", "bus"}, {"pedestrian"}, {"car"}]
SVLM_SAYS = ["a car", "a car", "nothing", "one car"]
LVLM_SAYS = ["a car", "a car and a bus", "a pedestrian", "a car"]


class ScriptedSvlm:
    """Answers from a script; records what the replay gave it (a test double of the model)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def reset(self) -> None:
        self.calls.clear()

    def answer(
        self, name: str, image: np.ndarray, stamp: Stamp, question: str, inputs: SvlmInputs
    ) -> SvlmAnswer:
        self.calls.append(
            {
                "name": name,
                "context": inputs.context_text,
                "chat": inputs.chat,
                "rois": list(inputs.rois),
                "roi_stamp": inputs.roi_stamp,
                "ggvr": inputs.ggvr,
            }
        )
        return SvlmAnswer(SVLM_SAYS[int(name)], 0.3, 40 if inputs.ggvr else 252, 252)


class ScriptedLvlm:
    def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
        text = LVLM_SAYS[int(name)]
        return LvlmAnswer(text, VOCAB.parse_answer(text), (Roi("car", Box(0, 0, 100, 100)),))


def frames() -> list[Frame]:
    blank = np.zeros((56, 56, 3), np.uint8)
    return [
        Frame(str(i), (100 + i) * NS_PER_S, lambda: blank, frozenset(t))
        for i, t in enumerate(TRUTH)
    ]


def run(method: str, latency: float) -> tuple[dict[str, object], ScriptedSvlm, list[object]]:
    svlm = ScriptedSvlm()
    log, events = replay(frames(), METHODS[method], lambda i: latency, svlm, ScriptedLvlm(), VOCAB)
    return log.report(), svlm, events


def report(folder: Path) -> object:
    """The evaluator's report.json in ``folder`` (None until it is written whole)."""
    try:
        return json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None


def test_edge_only_by_hand() -> None:
    report, _, _ = run("edge_only", 1.5)
    final = report["scores"]["final"]  # type: ignore[index]
    # TP car x3; FN bus, pedestrian; FP none -> micro 6/8; macro (car 1, bus 0, ped 0) / 3
    assert final["micro_f1"] == pytest.approx(0.75)
    assert final["macro_f1"] == pytest.approx(1 / 3)
    assert final["exact_match"] == pytest.approx(0.5)
    assert report["deadline_misses"] == 0
    assert report["answers_by_source"] == {"none": 0, "svlm": 4, "lvlm": 0}
    assert report["mean_final_latency_s"] == pytest.approx(0.3)


def test_cloud_only_in_time_is_perfect_and_late_is_invalid() -> None:
    fast, _, _ = run("cloud_only", 0.5)
    assert fast["scores"]["final"]["micro_f1"] == pytest.approx(1.0)  # type: ignore[index]
    assert fast["answers_by_source"] == {"none": 0, "svlm": 0, "lvlm": 4}
    slow, _, _ = run("cloud_only", 1.5)
    assert slow["deadline_misses"] == 4
    assert slow["scores"]["final"]["micro_f1"] == 0.0  # type: ignore[index]
    assert slow["scores"]["final"]["exact_match"] == 0.0  # type: ignore[index]
    # the LVLM's own answers are scored apart from the deadline
    assert slow["scores"]["lvlm"]["micro_f1"] == pytest.approx(1.0)  # type: ignore[index]


def test_crm_puts_late_cloud_answers_into_the_svlm_context() -> None:
    report, svlm, _ = run("crm_ggvr", 1.5)
    # uploads at 0, 1, 2, 3 s; answers arrive 1.5 s later: frame 0's before frame 2 starts,
    # frame 1's before frame 3 starts
    contexts = [c["context"] for c in svlm.calls]
    assert contexts[0] == ""
    assert "from the cloud model, 2.0 s ago: a car" in contexts[2]
    assert "from the cloud model, 2.0 s ago: a car and a bus" in contexts[3]
    assert report["context_replacements"] == 2
    assert [c["ggvr"] for c in svlm.calls] == [False, False, True, True]
    assert report["mean_visual_tokens"] == pytest.approx((252 + 252 + 40 + 40) / 4)
    assert report["answers_by_source"] == {"none": 0, "svlm": 4, "lvlm": 0}


def test_frames_the_svlm_cannot_start_in_time_are_dropped_and_invalid() -> None:
    class Slow(ScriptedSvlm):
        def answer(self, *args: object, **kwargs: object) -> SvlmAnswer:  # type: ignore[override]
            out = super().answer(*args, **kwargs)  # type: ignore[arg-type]
            return SvlmAnswer(out.answer, 2.5, 252, 252)

    from spotvlm_ros.evaluation.replay import ReplayConfig

    log, _ = replay(
        frames(),
        METHODS["edge_only"],
        lambda i: 1.0,
        Slow(),
        None,
        VOCAB,
        ReplayConfig(svlm_seconds=None),
    )
    report = log.report()
    # frame 0 runs 0-2.5 s (answer 1.5 s too late); frame 1 could start at 2.5 s (1.5 s
    # after its stamp: dropped); frame 2 starts at 2.5 s (0.5 s late), runs to 5.0 s (too
    # late); frame 3 could start at 5.0 s (2 s late: dropped). No answer is in time.
    assert report["svlm_dropped"] == 2
    assert report["answers_by_source"] == {"none": 4, "svlm": 0, "lvlm": 0}
    assert report["scores"]["svlm"]["frames_scored"] == 2


@pytest.mark.integration
def test_live_evaluator_agrees_with_the_offline_one(tmp_path: Path) -> None:
    """The events of an offline replay, published as the graph would publish them, give the
    live evaluator node the same report."""
    from spotvlm_msgs.msg import Answer, GroundTruth, HistoryEntry, LvlmResult, SvlmResult
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import to_time
    from test.helpers.graph import Probe

    offline, _, events = run("crm_ggvr", 0.8)
    probe = Probe("eval_probe")
    pubs = {
        "truth": probe.node.create_publisher(GroundTruth, "/spotvlm/ground_truth", qos.RESULTS),
        "svlm": probe.node.create_publisher(SvlmResult, "/spotvlm/svlm_result", qos.RESULTS),
        "lvlm": probe.node.create_publisher(LvlmResult, "/spotvlm/lvlm_result", qos.RESULTS),
        "final": probe.node.create_publisher(Answer, "/spotvlm/answer", qos.ANSWERS),
    }
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spotvlm_ros.nodes.evaluator",
            "--ros-args",
            "-p",
            f"report_dir:={tmp_path}",
        ],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        probe.wait_for(
            lambda: all(p.get_subscription_count() for p in pubs.values()),
            30,
            "the evaluator's subscriptions",
        )
        messages = []
        for e in events:
            stamp = to_time(e.stamp)  # type: ignore[attr-defined]
            labels = sorted(e.labels or ())  # type: ignore[attr-defined]
            kind = e.kind  # type: ignore[attr-defined]
            if kind == "truth":
                msg = GroundTruth(labels=labels)
            elif kind == "lvlm":
                msg = LvlmResult(labels=labels, status=LvlmResult.STATUS_OK)
            elif kind == "svlm":
                status = SvlmResult.STATUS_DROPPED if e.dropped else SvlmResult.STATUS_OK  # type: ignore[attr-defined]
                msg = SvlmResult(
                    labels=labels,
                    status=status,
                    visual_tokens_used=e.tokens_used,  # type: ignore[attr-defined]
                    visual_tokens_full=e.tokens_full,  # type: ignore[attr-defined]
                    history_used=[
                        HistoryEntry(stamp=to_time(s), source=HistoryEntry.SOURCE_LVLM)
                        for s in e.lvlm_history
                    ],
                )  # type: ignore[attr-defined]
            else:
                msg = Answer(labels=labels, source=int(e.source), latency=e.latency)  # type: ignore[attr-defined]
            msg.header.stamp = stamp
            messages.append((kind, msg))
        from rclpy.duration import Duration

        expected = json.loads(json.dumps(offline))
        # A writer that sees the evaluator's reader may publish before that reader has matched
        # the writer in turn, and a volatile reader drops what came before its match (DDS): so
        # the events go out again, up to three times, until the report has them all. The log
        # scores each (source, frame) once, so a second delivery changes nothing.
        for _ in range(3):
            for kind, msg in messages:
                pubs[kind].publish(msg)
            for pub in pubs.values():
                assert pub.wait_for_all_acked(Duration(seconds=20)), "the evaluator missed messages"
            # Acknowledged means in the evaluator's reader, not yet handled by its callbacks:
            # wait for its periodic report (every 5 s) to count every message.
            with contextlib.suppress(TimeoutError):  # a mismatch fails below, with the diff
                probe.wait_for(lambda: report(tmp_path) == expected, 12, "the evaluator's report")
            if report(tmp_path) == expected:
                break
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
        probe.close()
    assert report(tmp_path) == json.loads(json.dumps(offline)), out
    assert (tmp_path / "report.md").read_text().startswith("# spotvlm evaluation")


def svlm_events(events: list[object]) -> dict[int, object]:
    return {e.stamp: e for e in events if e.kind == "svlm"}  # type: ignore[attr-defined]


def test_the_newest_frame_wins_as_in_svlm_node() -> None:
    """A busy SVLM takes the newest frame: the one waiting is dropped as superseded when a
    newer one arrives (not answered late in arrival order)."""
    from spotvlm_ros.evaluation.replay import ReplayConfig

    # with a 2.5 s deadline and 2.5 s per frame: frame 0 runs 0-2.5 s; frame 1 waits and is
    # superseded by frame 2 at 2 s; frame 2 starts at 2.5 s; frame 3 starts at 5.0 s
    svlm = ScriptedSvlm()
    config = ReplayConfig(deadline=2.5, svlm_seconds=2.5)
    _, events = replay(frames(), METHODS["edge_only"], lambda i: 1.0, svlm, None, VOCAB, config)
    by_stamp = svlm_events(events)
    assert [c["name"] for c in svlm.calls] == ["0", "2", "3"]
    dropped = by_stamp[frames()[1].stamp]
    assert dropped.dropped and "superseded" in dropped.why  # type: ignore[attr-defined]
    assert dropped.time == frames()[2].stamp  # type: ignore[attr-defined]


def test_rois_reach_the_svlm_only_from_accepted_answers_and_only_while_young() -> None:
    from spotvlm_ros.core.context import ContextConfig
    from spotvlm_ros.evaluation.replay import ReplayConfig

    # delta 1.0 s: every cloud answer (1.5 s late) is stale, so neither its text nor its
    # ROIs reach the SVLM (the old replay took the ROIs of any answer)
    svlm = ScriptedSvlm()
    stale = ReplayConfig(context=ContextConfig(max_entries=2, delta=1.0))
    replay(frames(), METHODS["spotvlm"], lambda i: 1.5, svlm, ScriptedLvlm(), VOCAB, stale)
    assert [c["rois"] for c in svlm.calls] == [[], [], [], []]
    assert not any("cloud model" in str(c["context"]) for c in svlm.calls)
    # accepted answers, but ROIs older than 1.5 s are not used: frame 0's ROIs (arrived at
    # 1.5 s) are 2 s old at frame 2; frame 1's (arrived 2.5 s) are 2 s old at frame 3
    svlm = ScriptedSvlm()
    young = ReplayConfig(roi_max_age_s=1.5)
    replay(frames(), METHODS["spotvlm"], lambda i: 1.5, svlm, ScriptedLvlm(), VOCAB, young)
    assert [c["roi_stamp"] for c in svlm.calls] == [None, None, None, None]
    assert "a car" in str(svlm.calls[2]["context"])  # the history is not bound by that age
    svlm = ScriptedSvlm()
    replay(frames(), METHODS["spotvlm"], lambda i: 1.5, svlm, ScriptedLvlm(), VOCAB)
    stamps = [f.stamp for f in frames()]
    assert [c["roi_stamp"] for c in svlm.calls] == [None, None, stamps[0], stamps[1]]


def test_the_chat_history_form_can_be_evaluated_offline() -> None:
    from spotvlm_ros.evaluation.replay import ReplayConfig

    svlm = ScriptedSvlm()
    config = ReplayConfig(history_form="chat")
    replay(frames(), METHODS["crm"], lambda i: 1.5, svlm, ScriptedLvlm(), VOCAB, config)
    assert all(c["context"] == "" for c in svlm.calls)
    assert svlm.calls[0]["chat"] == ()
    turns = svlm.calls[2]["chat"]
    assert turns[-1] == {"role": "assistant", "content": "a car"}  # type: ignore[index]
    assert "cloud model" in turns[0]["content"]  # type: ignore[index]
