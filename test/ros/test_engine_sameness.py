"""The live graph and the offline replay make the same per-frame decisions.

One event sequence (frames, the SVLM finishing, LVLM results, deadlines passing) at chosen
times goes through svlm_node and context_manager as separate processes over DDS, on
simulated time (``use_sim_time``: this test publishes /clock), and through the replay in
virtual time. Per frame both must agree on: taken or dropped, the context text the SVLM got,
the frame of the ROIs it was given, and the final answer with its source and latency.

The live side is driven step by step: the SVLM is held at its test gate (SPOTVLM_TEST_HOLD_DIR)
while the clock advances to the scripted end of its compute, and every step waits for its
effect (a result, a context update, an answer) before the next, so nothing depends on how
fast the machine is. The SVLM is the tiny random model: its answers are recorded live and
replayed, since what is compared is the engine's decisions, not the model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spotvlm_ros.core.types import NS_PER_S, Box, Roi, Source, Stamp, stamp_from_seconds
from test.helpers.graph import wait_for
from test.helpers.models import tiny_model_dir

pytestmark = pytest.mark.integration

BASE = 1_700_000_000 * NS_PER_S  # the stamp of script time 0
DEADLINE_S = 1.0
DELTA_S = 10.0
HISTORY = 2
ROI_MAX_AGE_S = 2.5
BUDGET = 40  # tokens: small enough that the compressor drops and shortens turns
AFTER = 0.01  # s past a deadline, to let it pass

# frame i arrives at FRAMES[i] s; the SVLM computes COMPUTE[i] s; its LVLM result arrives
# LATENCY[i] s after the frame (every frame is uploaded)
FRAMES = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
COMPUTE = {0: 0.3, 1: 0.3, 2: 2.5, 4: 0.3, 5: 0.3, 6: 0.3}  # frame 3 is superseded
LATENCY = {0: 1.5, 1: 0.8, 2: 0.6, 3: 5.5, 4: 20.0, 5: 0.5, 6: 3.0}
LVLM_SAYS = {
    0: ("a car", ["car"]),
    1: ("a car and a bus", ["bus", "car"]),
    2: ("a pedestrian near a car", ["car", "pedestrian"]),
    3: ("a truck", ["truck"]),
    4: ("a bicycle", ["bicycle"]),
    5: ("two cars and a traffic light", ["car", "traffic light"]),
    6: ("a bus", ["bus"]),
}


def rois_of(i: int) -> tuple[Roi, ...]:
    return (Roi("car", Box(4.0 * i, 2.0, 4.0 * i + 20.0, 30.0), 0.9),)


# The script, worked out by hand (times in s):
#  0.0 frame 0, idle SVLM starts it     0.3 SVLM done 0
#  1.0 frame 1, started                 1.01 frame 0's deadline: the SVLM's (cloud late)
#  1.3 SVLM done 1                      1.5 LVLM 0 (late; enters the history, ROIs of 0)
#  1.8 LVLM 1 (in time: frame 1's)      2.0 frame 2, started (ROIs of 1, 1 s old)
#  2.6 LVLM 2 (in time: frame 2's)      3.0 frame 3 waits behind frame 2
#  4.0 frame 4 supersedes frame 3       4.01 frame 3's deadline: no answer (invalid)
#  4.5 SVLM done 2 (late), frame 4 taken at once (ROIs of 2, 2 s old), with the context
#      svlm_node holds: frame 2's own answer is not in it yet (it is superseded by the cloud
#      turn of frame 2 anyway, so the DDS round trip cannot change frame 4's context)
#  4.8 SVLM done 4                      5.0 frame 5, started (ROIs of 2: 3 s old, unused)
#  5.01 frame 4's deadline: the SVLM's  5.3 SVLM done 5
#  5.5 LVLM 5 (in time)                 6.0 frame 6, started (ROIs of 5)
#  6.3 SVLM done 6                      7.01 frame 6's deadline: the SVLM's
#  8.5 LVLM 3 (older than the accepted 5: superseded)   9.0 LVLM 6 (enters the history)
#  24.0 LVLM 4 (stale: 20 s > delta)
STEPS: list[tuple[float, str, int]] = sorted(  # by time: the clock only advances
    [
        (0.0, "frame", 0),
        (0.3, "done", 0),
        (FRAMES[0] + DEADLINE_S + AFTER, "deadline", 0),
        (1.0, "frame", 1),
        (1.3, "done", 1),
        (1.5, "lvlm", 0),
        (1.8, "lvlm", 1),
        (2.0, "frame", 2),
        (2.6, "lvlm", 2),
        (3.0, "frame", 3),
        (4.0, "frame", 4),
        (FRAMES[3] + DEADLINE_S + AFTER, "deadline", 3),
        (4.5, "done", 2),
        (4.8, "done", 4),
        (5.0, "frame", 5),
        (FRAMES[4] + DEADLINE_S + AFTER, "deadline", 4),
        (5.3, "done", 5),
        (5.5, "lvlm", 5),
        (6.0, "frame", 6),
        (6.3, "done", 6),
        (FRAMES[6] + DEADLINE_S + AFTER, "deadline", 6),
        (8.5, "lvlm", 3),
        (9.0, "lvlm", 6),
        (24.0, "lvlm", 4),
    ],
    key=lambda step: step[0],
)
TAKEN = {0, 1, 2, 4, 5, 6}  # frames the SVLM starts (frame 3 is superseded)
STARTS_AFTER = {4: 2}  # frame 4 is taken when frame 2 is done, not when it arrives


def stamp(i: int) -> Stamp:
    return BASE + stamp_from_seconds(FRAMES[i])


def image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)


class Live:
    """The test's node: the clock, the camera side (frames, upload notices), the cloud side
    (LVLM results); records what svlm_node and context_manager publish."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import Header

        from spotvlm_msgs.msg import Answer, ContextUpdate, Frame, LvlmResult, SvlmResult
        from spotvlm_ros.ros import qos, topics

        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node("sameness_probe")
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.frames = self.node.create_publisher(Frame, topics.FRAME, qos.RESULTS)
        self.uploads = self.node.create_publisher(Header, topics.UPLOADS, qos.RESULTS)
        self.lvlm = self.node.create_publisher(LvlmResult, topics.LVLM_RESULT, qos.RESULTS)
        self.svlm_results: dict[int, Any] = {}
        self.answers: dict[int, Any] = {}
        self.revision = 0
        self.node.create_subscription(SvlmResult, topics.SVLM_RESULT, self._on_svlm, qos.RESULTS)
        self.node.create_subscription(Answer, topics.ANSWER, self._on_answer, qos.ANSWERS)
        self.node.create_subscription(ContextUpdate, topics.CONTEXT, self._on_context, qos.LATCHED)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _on_svlm(self, result: Any) -> None:
        self.svlm_results[int(result.frame_seq)] = result

    def _on_answer(self, answer: Any) -> None:
        self.answers[int(answer.frame_seq)] = answer

    def _on_context(self, update: Any) -> None:
        self.revision = max(self.revision, int(update.revision))

    def set_clock(self, t: float) -> None:
        from rosgraph_msgs.msg import Clock

        from spotvlm_ros.ros.convert import to_time

        self.clock.publish(Clock(clock=to_time(BASE + stamp_from_seconds(t))))

    def frame(self, i: int) -> None:
        from std_msgs.msg import Header

        from spotvlm_msgs.msg import Frame
        from spotvlm_ros.ros.convert import rgb_to_image, to_time

        msg = Frame(seq=i, image=rgb_to_image(image(i), "rgb8"))
        msg.header.stamp = msg.ingest_time = to_time(stamp(i))
        msg.header.frame_id = msg.image.header.frame_id = "camera"
        self.uploads.publish(Header(stamp=msg.header.stamp, frame_id="camera"))
        self.frames.publish(msg)

    def lvlm_result(self, i: int, t: float) -> None:
        from spotvlm_msgs.msg import LvlmResult
        from spotvlm_ros.ros.convert import rois_to_msgs, to_time

        answer, labels = LVLM_SAYS[i]
        msg = LvlmResult(frame_seq=i, answer=answer, labels=labels, status=LvlmResult.STATUS_OK)
        msg.header.stamp = to_time(stamp(i))
        msg.receive_time = to_time(BASE + stamp_from_seconds(t))
        msg.latency = LATENCY[i]
        msg.question = "q"
        msg.rois = rois_to_msgs(rois_of(i))
        self.lvlm.publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def start(module: str, log: Path, env: dict[str, str], *params: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", f"spotvlm_ros.nodes.{module}", "--ros-args"]
    args += ["-p", "use_sim_time:=true"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Live, Path, Path]]:
    from spotvlm_ros.svlm.hold import HOLD_DIR_VARIABLE
    from spotvlm_ros.svlm.qwen import MODEL_PARAMETER

    gate = tmp_path / "gate"
    env = {**os.environ, HOLD_DIR_VARIABLE: str(gate)}
    svlm = start(
        "svlm_node",
        tmp_path / "svlm_node.log",
        env,
        f"{MODEL_PARAMETER}:={tiny_model_dir()}",
        "max_new_tokens:=6",
        f"deadline_s:={DEADLINE_S}",
        f"roi_max_age_s:={ROI_MAX_AGE_S}",
        f"context_budget_tokens:={BUDGET}",
        "question:=q",
        "torch_threads:=1",
    )
    manager = start(
        "context_manager",
        tmp_path / "context_manager.log",
        dict(os.environ),
        f"deadline_s:={DEADLINE_S}",
        f"max_delay_s:={DELTA_S}",
        f"history_size:={HISTORY}",
        "question:=q",
        f"ledger_dir:={tmp_path / 'ledger'}",
    )
    probe = Live()
    try:
        yield probe, gate, tmp_path
    finally:
        for process in (svlm, manager):
            process.send_signal(signal.SIGINT)
        for process in (svlm, manager):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        probe.close()


def lifecycle(probe: Live, transition: str) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = probe.node.create_client(ChangeState, "/svlm_node/change_state")
    assert client.wait_for_service(timeout_sec=120.0), "svlm_node's lifecycle service"
    request = ChangeState.Request()
    request.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
    future = client.call_async(request)
    wait_for(future.done, 300.0, f"svlm_node's {transition}")
    assert future.result().success, transition


def run_live(probe: Live, gate: Path, logs: Path) -> None:
    from spotvlm_msgs.msg import SvlmResult

    def wait(condition: Callable[[], bool], what: str) -> None:
        try:
            wait_for(condition, 120.0, what)
        except TimeoutError as exc:
            seen = {
                "svlm": {k: (r.status, r.error) for k, r in sorted(probe.svlm_results.items())},
                "answers": {k: (a.source, a.latency) for k, a in sorted(probe.answers.items())},
                "revision": probe.revision,
            }
            raise AssertionError(
                f"{exc}\nseen: {seen}\n"
                + "\n".join(
                    f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log"))
                )
            ) from None

    probe.set_clock(-1.0)
    wait(lambda: probe.node.count_publishers("/spotvlm/answer") >= 1, "context_manager")
    lifecycle(probe, "configure")  # svlm_node subscribes to frames once configured
    lifecycle(probe, "activate")
    wait(lambda: probe.node.count_subscribers("/spotvlm/frame") >= 2, "both nodes on frames")
    wait(lambda: probe.node.count_subscribers("/spotvlm/lvlm_result") >= 1, "lvlm subscriber")
    wait(lambda: probe.node.count_subscribers("/spotvlm/uploads") >= 1, "uploads subscriber")
    wait(lambda: probe.node.count_publishers("/spotvlm/context") >= 1, "the context publisher")
    for t, kind, i in STEPS:
        # the clock first: each node takes /clock before its other inputs when both are ready
        probe.set_clock(t)
        if kind == "frame":
            probe.frame(i)
            if i in TAKEN and i not in STARTS_AFTER:  # the SVLM is idle: it starts at once
                wait(lambda i=i: (gate / f"holding-{i}").exists(), f"frame {i} started")
            # a frame that waited in the slot is superseded by this one (answered as dropped)
            for j in [j for j in range(i - 1) if j not in TAKEN]:
                wait(lambda j=j: j in probe.svlm_results, f"frame {j} dropped")
        elif kind == "done":
            revision = probe.revision
            (gate / f"release-{i}").touch()
            wait(lambda i=i: i in probe.svlm_results, f"the SVLM's result for frame {i}")
            assert probe.svlm_results[i].status == SvlmResult.STATUS_OK
            wait(lambda r=revision: probe.revision > r, f"the context after frame {i}'s answer")
            for waiting, behind in STARTS_AFTER.items():
                if behind == i:
                    wait(
                        lambda w=waiting: (gate / f"holding-{w}").exists(),
                        f"frame {waiting} started after frame {i}",
                    )
        elif kind == "lvlm":
            revision = probe.revision
            probe.lvlm_result(i, t)
            wait(lambda r=revision: probe.revision > r, f"the context after LVLM {i}")
        elif kind == "deadline":
            wait(lambda i=i: i in probe.answers, f"frame {i}'s answer at its deadline")
    for i in range(len(FRAMES)):
        wait(lambda i=i: i in probe.answers, f"frame {i}'s answer")


class RecordedSvlm:
    """The live SVLM's answers and the scripted compute times; records its inputs."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.inputs: dict[str, Any] = {}

    def reset(self) -> None:
        self.inputs.clear()

    def answer(self, name: str, image: Any, stamp: Stamp, question: str, inputs: Any) -> Any:
        from spotvlm_ros.evaluation.replay import SvlmAnswer

        self.inputs[name] = inputs
        return SvlmAnswer(self.answers[name], COMPUTE[int(name)], 0, 0)


class ScriptedLvlm:
    def answer(self, name: str, image: Any, question: str) -> Any:
        from spotvlm_ros.evaluation.replay import LvlmAnswer

        text, labels = LVLM_SAYS[int(name)]
        return LvlmAnswer(text, frozenset(labels), rois_of(int(name)))


def run_replay(svlm_answers: dict[str, str]) -> tuple[RecordedSvlm, list[Any]]:
    from transformers import AutoTokenizer

    from spotvlm_ros.core.context import ContextConfig
    from spotvlm_ros.core.policy import UploadMode, UploadPolicyConfig
    from spotvlm_ros.core.vocab import vocabulary
    from spotvlm_ros.evaluation.replay import METHODS, Frame, ReplayConfig, replay

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir()))
    frames = [
        Frame(str(i), stamp(i), lambda i=i: image(i), frozenset()) for i in range(len(FRAMES))
    ]
    config = ReplayConfig(
        deadline=DEADLINE_S,
        svlm_seconds=None,  # the scripted COMPUTE
        context=ContextConfig(HISTORY, DELTA_S),
        context_budget=BUDGET,
        count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
        upload=UploadPolicyConfig(UploadMode.EVERY_FRAME, max_in_flight=64),
        question="q",
        roi_max_age_s=ROI_MAX_AGE_S,
    )
    svlm = RecordedSvlm(svlm_answers)
    _, events = replay(
        frames,
        METHODS["spotvlm"],
        lambda i: LATENCY[i],
        svlm,
        ScriptedLvlm(),
        vocabulary("bdd100k"),
        config,
    )
    return svlm, events


def test_live_graph_and_replay_decide_every_frame_alike(live: tuple[Live, Path, Path]) -> None:
    from spotvlm_msgs.msg import SvlmResult
    from spotvlm_ros.ros.convert import stamp_of

    probe, gate, logs = live
    run_live(probe, gate, logs)
    results = probe.svlm_results
    answers = {str(i): r.answer for i, r in results.items() if r.status == SvlmResult.STATUS_OK}
    svlm, events = run_replay(answers)
    replayed = {e.stamp: e for e in events if e.kind == "svlm"}
    finals = {e.stamp: e for e in events if e.kind == "final"}
    rows = []
    for i in range(len(FRAMES)):
        s = stamp(i)
        live_result, replay_result = results[i], replayed[s]
        live_answer, final = probe.answers[i], finals[s]
        inputs = svlm.inputs.get(str(i))
        roi_live = stamp_of(live_result.roi_source_stamp) or None
        rows.append(
            {
                "frame": i,
                "taken": (live_result.status == SvlmResult.STATUS_OK, not replay_result.dropped),
                "context": (live_result.context_text, inputs.context_text if inputs else ""),
                "roi_stamp": (roi_live, inputs.roi_stamp if inputs else None),
                "source": (live_answer.source, int(final.source)),
                "labels": (sorted(live_answer.labels), sorted(final.labels or ())),
                "latency": (round(live_answer.latency, 6), round(final.latency, 6)),
            }
        )
    differ = [
        (row["frame"], key, pair)
        for row in rows
        for key, pair in row.items()
        if key != "frame" and pair[0] != pair[1]
    ]
    assert not differ, differ
    # and the script did what it was written for (worked out by hand above)
    by_frame = {row["frame"]: row for row in rows}
    assert [by_frame[i]["taken"][0] for i in range(7)] == [i in TAKEN for i in range(7)]
    assert "superseded" in results[3].error
    sources = [Source(by_frame[i]["source"][0]).name for i in range(7)]
    assert sources == ["SVLM", "LVLM", "LVLM", "NONE", "SVLM", "LVLM", "SVLM"]
    roi_frames = {i: by_frame[i]["roi_stamp"][0] for i in TAKEN}
    assert roi_frames == {0: None, 1: None, 2: stamp(1), 4: stamp(2), 5: None, 6: stamp(5)}
    assert "cloud model" in by_frame[2]["context"][0]
