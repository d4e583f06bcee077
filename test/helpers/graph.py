"""Run the spotvlm graph as separate processes and observe it from the test process."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def real_frames(limit: int = 12) -> list[np.ndarray]:
    """RGB frames from ../shared/data: BDD100K (1280x720), then CamVid (480x360)."""
    import cv2

    files = sorted(glob.glob(str(SHARED / "data/bdd100k_mot/images/**/*.jpg"), recursive=True))
    files += sorted(glob.glob(str(SHARED / "data/camvid_seq05vd/images/*.png")))
    return [cv2.imread(f)[:, :, ::-1].copy() for f in files[:limit]]


@contextmanager
def running_graph(log_dir: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``spotvlm_ros ARGS`` with each node's log in ``log_dir``; stopped with SIGINT."""
    log_dir.mkdir(parents=True, exist_ok=True)
    runner_log = open(log_dir / "runner.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotvlm_ros.runner", "--log-dir", str(log_dir), *args],
        stdout=runner_log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        from test.helpers.servers import stop_process

        stop_process(proc, signal.SIGINT, timeout=40.0)
        runner_log.close()


def logs(log_dir: Path) -> str:
    """Every log of a run, for assertion messages."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(log_dir.glob("*.log"))
        if not p.name.endswith(("-stdout.log", "-stderr.log"))
    )


def stamp_of_msg(msg: Any) -> int:
    """The header stamp of a message (ns)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def node_processes(root: int, name: str) -> list[int]:
    """The pids of the processes below ``root`` that run the ROS node ``name``."""
    import psutil

    pids = []
    for child in psutil.Process(root).children(recursive=True):
        try:
            if f"__node:={name}" in child.cmdline():
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def node_log(log_dir: Path, name: str) -> str:
    """The output of one node of a run (launch names its file ``<name>-<N>.log``)."""
    files = sorted(log_dir.glob(f"{name}-*.log"))
    files = [f for f in files if not f.name.endswith(("-stdout.log", "-stderr.log"))]
    if not files:
        raise FileNotFoundError(f"no log of {name} in {log_dir}: {sorted(log_dir.iterdir())}")
    return "\n".join(f.read_text(errors="replace") for f in files)


class Probe:
    """An rclpy node in the test process: publishes camera frames, records the graph's output."""

    def __init__(
        self,
        name: str = "test_probe",
        overlays: bool = True,
        camera: bool = True,
        detections: bool = False,
        admitted: bool = False,
        diagnostics: bool = False,
    ) -> None:
        """``camera=False``: no camera publisher (a test that listens to another one's camera
        topic reliably would otherwise meet its own best-effort publisher: incompatible QoS)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from spotvlm_msgs.msg import Answer, LvlmResult, SvlmResult
        from spotvlm_ros.ros import qos

        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node(name)
        if camera:
            self.camera = self.node.create_publisher(Image, "/camera/image_raw", qos.CAMERA)
        self.answers: list[Any] = []
        self.svlm: list[Any] = []
        self.lvlm: list[Any] = []
        self.overlays: list[Any] = []
        self.answer_arrivals: dict[int, int] = {}  # frame stamp -> arrival here (ns)
        self._state_clients: dict[str, Any] = {}
        self.node.create_subscription(Answer, "/spotvlm/answer", self._on_answer, qos.ANSWERS)
        self.node.create_subscription(
            SvlmResult, "/spotvlm/svlm_result", self.svlm.append, qos.RESULTS
        )
        self.node.create_subscription(
            LvlmResult, "/spotvlm/lvlm_result", self.lvlm.append, qos.RESULTS
        )
        if overlays:
            self.node.create_subscription(
                Image, "/spotvlm/overlay", self.overlays.append, qos.RESULTS
            )
        self.admitted: list[int] = []  # stamps of the frames camera_ingest admitted
        self._watches_frames = admitted
        if admitted:
            from spotvlm_msgs.msg import Frame

            self.node.create_subscription(
                Frame,
                "/spotvlm/frame",
                lambda f: self.admitted.append(stamp_of_msg(f)),
                qos.RESULTS,
            )
        self.detections: list[Any] = []
        self.lvlm_detections: list[Any] = []
        if detections:
            from vision_msgs.msg import Detection2DArray

            self.node.create_subscription(
                Detection2DArray, "/spotvlm/detections", self.detections.append, qos.RESULTS
            )
            self.node.create_subscription(
                Detection2DArray,
                "/spotvlm/lvlm_detections",
                self.lvlm_detections.append,
                qos.RESULTS,
            )
        self.diagnostics: dict[str, Any] = {}  # status name -> its latest DiagnosticStatus
        if diagnostics:
            from diagnostic_msgs.msg import DiagnosticArray

            def on_diagnostics(array: Any) -> None:
                self.diagnostics.update({s.name: s for s in array.status})

            self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_answer(self, answer: Any) -> None:
        from spotvlm_ros.ros.convert import stamp_of

        now = self.node.get_clock().now().nanoseconds
        self.answer_arrivals.setdefault(stamp_of(answer.header.stamp), now)
        self.answers.append(answer)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until true; fail with ``what`` after ``timeout`` s."""
        wait_for(condition, timeout, what)

    def wait_for_graph(
        self, timeout: float = 90.0, warm_up: np.ndarray | None = None, frame_listeners: int = 3
    ) -> None:
        """Wait until every node is up and matched (discovery, not a fixed sleep), and with
        ``warm_up``, until the graph has answered that frame (see :meth:`wait_until_answered`;
        its answer stays in the records: tests look at the stamps they published)."""
        self.wait_for(lambda: self.camera.get_subscription_count() >= 1, timeout, "camera_ingest")
        own = 1 if self._watches_frames else 0  # this probe's own subscription, if any
        self.wait_for(
            lambda: self.node.count_subscribers("/spotvlm/frame") >= frame_listeners + own,
            timeout,
            "svlm_node, cloud_bridge and context_manager on /spotvlm/frame",
        )
        self.wait_for(
            lambda: self.node.count_publishers("/spotvlm/answer") >= 1,
            timeout,
            "context_manager's answers",
        )
        self.wait_for(
            lambda: self.node.count_publishers("/spotvlm/svlm_result") >= 1,
            timeout,
            "svlm_node (model loaded)",
        )
        self.wait_for(lambda: self.svlm_state() == "active", timeout, "svlm_node to be active")
        if warm_up is not None:
            self.wait_until_answered(warm_up, timeout)

    def transition(self, name: str, node: str = "/svlm_node") -> bool:
        """One lifecycle transition (configure, activate, ...) of ``node``; its success."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.node.create_client(ChangeState, f"{node}/change_state")
        assert client.wait_for_service(timeout_sec=60.0), node
        request = ChangeState.Request()
        request.transition.id = getattr(Transition, f"TRANSITION_{name.upper()}")
        future = client.call_async(request)
        self.wait_for(future.done, 120.0, f"the {name} transition of {node}")
        return bool(future.result().success)

    def diagnostic_value(self, name: str, key: str) -> str | None:
        """A value of the latest ``name`` status on /diagnostics (needs ``diagnostics=True``)."""
        status = self.diagnostics.get(name)
        values = {v.key: v.value for v in status.values} if status is not None else {}
        return values.get(key)

    def svlm_state(self, node: str = "/svlm_node") -> str:
        """The lifecycle state of svlm_node (``unknown`` when it does not answer)."""
        from lifecycle_msgs.srv import GetState

        client = self._state_clients.get(node)
        if client is None:
            client = self._state_clients[node] = self.node.create_client(
                GetState, f"{node}/get_state"
            )
        if not client.wait_for_service(timeout_sec=1.0):
            return "unknown"
        future = client.call_async(GetState.Request())
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        result = future.result() if future.done() else None
        return result.current_state.label if result is not None else "unknown"

    def wait_until_answered(self, rgb: np.ndarray, timeout: float) -> int:
        """Publish ``rgb`` until the graph answers one of them; returns its stamp.

        The camera topic is best effort, like a camera's, and discovery is not symmetric:
        this publisher may see camera_ingest's subscription before that subscription has
        matched it, and a frame sent then is lost (seen on the first run after a rebuild).
        """
        give_up = time.monotonic() + timeout
        while True:
            stamp = self.publish_frame(rgb)
            try:
                self.wait_for(lambda s=stamp: s in self.answer_arrivals, 5.0, "")
                # camera_ingest admits frames at the task rate (2 Hz): a frame published
                # right after this one would be throttled away
                time.sleep(0.6)
                return stamp
            except TimeoutError:
                if time.monotonic() > give_up:
                    raise TimeoutError(f"no warm-up frame answered within {timeout} s") from None

    def publish_frame(self, rgb: np.ndarray, **fields: Any) -> int:
        """Publish one camera frame (bgr8) stamped now, with ``fields`` of the Image message
        overridden; returns its stamp (ns)."""
        from sensor_msgs.msg import Image

        from spotvlm_ros.ros.convert import rgb_to_image

        msg = rgb_to_image(rgb, "bgr8") if rgb.size else Image()
        now = self.node.get_clock().now()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = "camera"
        for key, value in fields.items():
            setattr(msg, key, value)
        self.camera.publish(msg)
        return int(now.nanoseconds)

    def publish_at_rate(
        self, frames: list[np.ndarray], hz: float, after: int | None = None
    ) -> list[int]:
        """Publish frames at ``hz`` (the first a period after the stamp ``after``, when
        given: a stream in several calls); returns their stamps."""
        stamps: list[int] = [after] if after is not None else []
        period = 1.0 / hz
        for frame in frames:
            # at least one period after the previous frame's stamp: camera_ingest admits
            # frames at the task rate, and a late frame followed by an on-time one would
            # be closer than that (throttled away) on a loaded machine
            if stamps:
                due = stamps[-1] + int(period * 1e9)
                while (wait := due - self.node.get_clock().now().nanoseconds) > 0:
                    time.sleep(wait / 1e9)
            stamps.append(self.publish_frame(frame))
        return stamps[1:] if after is not None else stamps

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown()
        self.node.destroy_node()


def check_sources(probe: Probe, answers: list[Any], timeout: float = 15.0) -> dict[int, int]:
    """Check each answer against what the models published for its frame, and count the
    answers per source (0 none, 1 SVLM, 2 LVLM).

    How many frames the models answer in time depends on the machine's speed and load, so
    tests assert these counts only as liveness (at least one, or none); what holds on any
    machine is that an answer's source is a model that answered that frame OK, with that
    model's labels, within the deadline, and that an invalid answer is empty.
    """
    from spotvlm_ros.ros.convert import stamp_of

    wanted = {
        1: {stamp_of(a.header.stamp) for a in answers if a.source == 1},
        2: {stamp_of(a.header.stamp) for a in answers if a.source == 2},
    }

    def ok_results() -> dict[int, dict[int, Any]]:
        return {
            1: {stamp_of(r.header.stamp): r for r in list(probe.svlm) if r.status == 0},
            2: {stamp_of(r.header.stamp): r for r in list(probe.lvlm) if r.status == 0},
        }

    # a result and the answer built from it come from different processes: either may
    # reach this probe first; and a result published by a node respawned a moment ago may
    # reach context_manager but not this probe (its subscription matches the new publisher
    # later): what arrives is checked
    deadline = time.monotonic() + timeout
    while not all(wanted[k] <= set(ok_results()[k]) for k in wanted):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    results = ok_results()
    counts = {0: 0, 1: 0, 2: 0}
    for answer in answers:
        counts[answer.source] += 1
        if answer.source == 0:
            assert not answer.deadline_met and answer.answer == "", answer
            continue
        result = results[answer.source].get(stamp_of(answer.header.stamp))
        if result is None:
            continue
        assert sorted(answer.labels) == sorted(result.labels), (answer, result)
        assert answer.deadline_met and answer.latency <= answer.deadline, answer
    return counts
