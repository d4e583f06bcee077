"""svlm_node as a managed node, driven the way a robot drives it: configure loads the model,
activate answers, deactivate pauses with the model kept, cleanup returns its memory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test.helpers.graph import Probe, real_frames
from test.helpers.models import tiny_model_dir
from test.helpers.servers import stop_process

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def svlm() -> Iterator[subprocess.Popen[bytes]]:
    log = open(ROOT / "log" / "svlm-lifecycle.log", "wb")  # noqa: SIM115 - closed below
    proc = start_svlm_node(tiny_model_dir(), log)
    yield proc
    stop_process(proc, signal.SIGINT, 20.0)
    log.close()


def start_svlm_node(model: Path, log: Any) -> subprocess.Popen[bytes]:
    """svlm_node as a process (unconfigured), with ``model`` as its model_path."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "spotvlm_ros.nodes.svlm_node", "--ros-args"),
            *("-p", f"model_path:={model}", "-p", "max_new_tokens:=4", "-p", "deadline_s:=5.0"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def change(probe: Probe, transition: str) -> None:
    assert probe.transition(transition), transition


def activated(probe: Probe) -> Any:
    """Configure and activate the svlm_node under test; its frame publisher, matched."""
    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros import qos

    frames = probe.node.create_publisher(Frame, "/spotvlm/frame", qos.RESULTS)
    probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 60.0, "svlm_node up")
    change(probe, "configure")
    change(probe, "activate")
    probe.wait_for(lambda: frames.get_subscription_count() >= 1, 30.0, "its frame topic")
    return frames


def publish_frame(probe: Probe, publisher: object, seq: int) -> int:
    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros.convert import rgb_to_image

    now = probe.node.get_clock().now()
    frame = Frame(seq=seq, image=rgb_to_image(real_frames(1)[0], "bgr8"))
    frame.header.stamp = frame.ingest_time = now.to_msg()
    publisher.publish(frame)  # type: ignore[attr-defined]
    return int(now.nanoseconds)


def test_configure_activate_deactivate_cleanup(svlm: subprocess.Popen[bytes]) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    from spotvlm_msgs.msg import Frame
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import stamp_of

    probe = Probe("lifecycle_probe", overlays=False, camera=False)
    try:
        frames = probe.node.create_publisher(Frame, "/spotvlm/frame", qos.RESULTS)
        states: list[str] = []  # of svlm_node's statuses, in order
        probe.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda a: states.extend(
                next(v.value for v in s.values if v.key == "state")
                for s in a.status
                if s.name == "svlm_node: inference"
            ),
            50,
        )
        probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 60.0, "svlm_node up")
        unloaded = rss_mib(svlm.pid)
        # the ros2 CLI, as on a robot (a cold CLI may not have discovered the node yet:
        # "Node not found", then it has; a person would simply run it again)
        if shutil.which("ros2"):
            command = ["ros2", "lifecycle", "set", "/svlm_node", "configure"]
            for _ in range(5):
                out = subprocess.run(
                    command, capture_output=True, text=True, timeout=120, env=os.environ
                )
                if "Node not found" not in out.stderr:
                    break
                time.sleep(1.0)
            assert "Transitioning successful" in out.stdout, out.stdout + out.stderr
        else:
            change(probe, "configure")
        probe.wait_for(lambda: probe.svlm_state() == "inactive", 30.0, "svlm_node inactive")
        # diagnostics went on during the load (the executor was busy configuring)
        probe.wait_for(lambda: states[-1:] == ["inactive"], 10.0, "diagnostics after configure")
        assert "configuring" in states, states
        loaded = rss_mib(svlm.pid)
        assert loaded - unloaded > 100, (unloaded, loaded)  # the tiny model is ~160 MB
        probe.wait_for(lambda: frames.get_subscription_count() >= 1, 30.0, "its frame topic")

        # inactive: a frame gets no SVLM result
        publish_frame(probe, frames, 0)
        time.sleep(2.0)
        assert probe.svlm == []

        change(probe, "activate")
        stamp = publish_frame(probe, frames, 1)
        probe.wait_for(lambda: len(probe.svlm) == 1, 30.0, "an SVLM result while active")
        assert stamp_of(probe.svlm[0].header.stamp) == stamp and probe.svlm[0].status == 0

        change(probe, "deactivate")
        publish_frame(probe, frames, 2)
        time.sleep(2.0)
        assert len(probe.svlm) == 1  # nothing while inactive, and the model stays loaded
        assert rss_mib(svlm.pid) > unloaded + 100

        # cleanup gives the weights' memory back (what stays is code: the torch and
        # transformers modules the first load imported)
        change(probe, "cleanup")
        probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 30.0, "svlm_node unconfigured")
        weights = sum(f.stat().st_size for f in tiny_model_dir().glob("*.safetensors")) / 2**20
        cleaned = rss_mib(svlm.pid)
        assert loaded - cleaned > 0.8 * weights, (unloaded, loaded, cleaned, weights)

        # it loads and answers again, and a second cleanup leaves no more behind
        probe.wait_for(lambda: frames.get_subscription_count() == 0, 30.0, "its topic gone")
        change(probe, "configure")
        change(probe, "activate")
        probe.wait_for(lambda: frames.get_subscription_count() >= 1, 30.0, "its topic again")
        stamp = publish_frame(probe, frames, 3)
        probe.wait_for(lambda: len(probe.svlm) == 2, 30.0, "an answer after reloading")
        assert stamp_of(probe.svlm[1].header.stamp) == stamp
        change(probe, "deactivate")
        change(probe, "cleanup")
        assert rss_mib(svlm.pid) < cleaned + 0.5 * weights, (cleaned, rss_mib(svlm.pid))
    finally:
        probe.close()
    assert svlm.poll() is None


def test_svlm_node_loads_the_published_checkpoint_layout_through_model_path() -> None:
    """What a user with the downloaded Qwen2.5-VL-3B-Instruct folder does: model_path set
    to it, configure, activate, frames answered; the log says what was read from it."""
    from test.helpers.models import published_model_dir

    log_path = ROOT / "log" / "svlm-published-layout.log"
    with open(log_path, "wb") as log:
        proc = start_svlm_node(published_model_dir(), log)
        probe = Probe("published_layout_probe", overlays=False, camera=False)
        try:
            frames = activated(probe)
            publish_frame(probe, frames, 0)
            probe.wait_for(lambda: len(probe.svlm) == 1, 60.0, "an SVLM result")
            assert probe.svlm[0].status == 0, probe.svlm[0].error
        finally:
            probe.close()
            stop_process(proc, signal.SIGINT, 20.0)
    text = log_path.read_text()
    assert "chat template: the folder's own" in text, text[-3000:]
    assert "capped by max_pixels 200704" in text
    assert "generation_config.json asks for" in text and "not used" in text
    assert "attention sdpa" in text


def test_lifecycle_cycles_while_frames_flow_leave_svlm_node_as_a_fresh_start(
    svlm: subprocess.Popen[bytes],
) -> None:
    """deactivate, cleanup, configure, activate, twice, with frames and context updates
    arriving throughout: after cleanup the node holds no subscription (a subscription left
    behind once kept its executor spinning at 100 % and starved inference), and after each
    cycle it answers again."""
    import threading

    from spotvlm_msgs.msg import ContextUpdate, Frame
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import stamp_of

    probe = Probe("cycle_probe", overlays=False, camera=False)
    stop = threading.Event()
    try:
        frames = probe.node.create_publisher(Frame, "/spotvlm/frame", qos.RESULTS)
        context = probe.node.create_publisher(ContextUpdate, "/spotvlm/context", qos.LATCHED)
        sent: list[int] = []

        def feed() -> None:
            while not stop.is_set():
                sent.append(publish_frame(probe, frames, len(sent)))
                context.publish(ContextUpdate(history_size=4, max_delay=10.0))
                stop.wait(0.5)

        probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 60.0, "svlm_node up")
        change(probe, "configure")
        change(probe, "activate")
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        for cycle in range(3):
            answered = {stamp_of(r.header.stamp) for r in probe.svlm if r.status == 0}
            mark = len(sent)
            probe.wait_for(
                lambda a=answered, m=mark: any(
                    stamp_of(r.header.stamp) not in a
                    and stamp_of(r.header.stamp) in sent[m:]
                    and r.status == 0
                    for r in list(probe.svlm)
                ),
                60.0,
                f"a frame answered in cycle {cycle}",
            )
            if cycle == 2:
                break
            # after cleanup no subscriber is left; after configure exactly one again
            for transitions, subscribers in (
                (("deactivate", "cleanup"), 0),
                (("configure", "activate"), 1),
            ):
                for name in transitions:
                    change(probe, name)
                for topic in ("/spotvlm/frame", "/spotvlm/context"):
                    probe.wait_for(
                        lambda t=topic, n=subscribers: probe.node.count_subscribers(t) == n,
                        30.0,
                        f"{subscribers} subscriber(s) on {topic} after {transitions[-1]}",
                    )
    finally:
        stop.set()
        probe.close()
    assert svlm.poll() is None


def test_a_bad_context_update_is_refused_and_the_frames_are_still_answered(
    svlm: subprocess.Popen[bytes],
) -> None:
    """Context updates from another publisher, latched: one with a NaN max_delay (refused,
    the previous kept), one with an entry of unknown source and 500 ROIs (the entry left out,
    the 100 highest-scoring ROIs kept). Every frame after each is answered OK."""
    import math

    from diagnostic_msgs.msg import DiagnosticArray

    from spotvlm_msgs.msg import ContextUpdate, Frame, HistoryEntry, Roi
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import stamp_of

    probe = Probe("bad_context_probe", overlays=False, camera=False)
    counts: dict[str, str] = {}

    def on_diagnostics(array: DiagnosticArray) -> None:
        for status in array.status:
            if status.name == "svlm_node: inference":
                counts.update({kv.key: kv.value for kv in status.values})

    probe.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    try:
        frames = probe.node.create_publisher(Frame, "/spotvlm/frame", qos.RESULTS)
        context = probe.node.create_publisher(ContextUpdate, "/spotvlm/context", qos.LATCHED)
        probe.wait_for(lambda: probe.svlm_state() == "unconfigured", 60.0, "svlm_node up")
        change(probe, "configure")
        change(probe, "activate")
        probe.wait_for(lambda: frames.get_subscription_count() >= 1, 30.0, "its frame topic")
        now = probe.node.get_clock().now().to_msg()
        many = [Roi(label="car", score=i / 500) for i in range(500)]
        for roi in many:
            roi.box.width = roi.box.height = 20
        bad = [
            ContextUpdate(history_size=2, max_delay=math.nan),
            ContextUpdate(
                history_size=2,
                max_delay=10.0,
                history=[HistoryEntry(stamp=now, answer="car", source=7)],
                rois=many,
                roi_source_stamp=now,
            ),
        ]
        for seq, update in enumerate(bad):
            context.publish(update)
            stamp = publish_frame(probe, frames, seq)
            probe.wait_for(
                lambda s=stamp: any(stamp_of(r.header.stamp) == s for r in probe.svlm),
                60.0,
                f"the frame after bad context update {seq}",
            )
            (result,) = [r for r in probe.svlm if stamp_of(r.header.stamp) == stamp]
            assert result.status == 0, result.error
        probe.wait_for(lambda: counts.get("bad_context") == "1", 30.0, "bad_context counted")
    finally:
        probe.close()
    assert svlm.poll() is None
    text = (ROOT / "log" / "svlm-lifecycle.log").read_text()
    assert "context update refused (delta must be >= 0 s, got nan)" in text, text[-2000:]
    assert "1 history entr(ies) of unknown source left out" in text
    assert "400 ROIs beyond 100 left out" in text


def test_diagnostics_warn_while_most_frames_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is held on one frame (the test gate) while four more arrive: each replaces
    the one waiting and is dropped as superseded. svlm_node's status then says so (WARN),
    not OK, although it is active and answering in principle."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from spotvlm_ros.svlm.hold import HOLD_DIR_VARIABLE

    gate = tmp_path / "gate"
    monkeypatch.setenv(HOLD_DIR_VARIABLE, str(gate))
    log = open(tmp_path / "svlm.log", "wb")  # noqa: SIM115 - closed below
    proc = start_svlm_node(tiny_model_dir(), log)
    probe = Probe("dropped_probe", overlays=False, camera=False)
    statuses: list[DiagnosticStatus] = []
    probe.node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda a: statuses.extend(s for s in a.status if s.name == "svlm_node: inference"),
        50,
    )
    try:
        frames = activated(probe)
        publish_frame(probe, frames, 0)
        probe.wait_for(lambda: (gate / "holding-0").exists(), 60.0, "the model held on frame 0")
        for seq in range(1, 5):
            publish_frame(probe, frames, seq)
        probe.wait_for(lambda: len(probe.svlm) >= 3, 60.0, "three frames dropped")
        assert all(r.status == 1 and "superseded" in r.error for r in probe.svlm)  # DROPPED
        probe.wait_for(
            lambda: any(
                s.level == DiagnosticStatus.WARN and "most frames dropped or failed" in s.message
                for s in list(statuses)
            ),
            30.0,
            "a WARN status while most frames are dropped",
        )
        (gate / "release-0").touch()
        probe.wait_for(lambda: any(r.status == 0 for r in probe.svlm), 60.0, "frame 0 answered")
    finally:
        probe.close()
        stop_process(proc, signal.SIGINT, 20.0)
        log.close()
