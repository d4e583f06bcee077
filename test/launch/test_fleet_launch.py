"""launch_pytest tests of launch/fleet.launch.py: several camera graphs under namespaces
sharing one LVLM, a saturated server answering 429, and a replica that dies and returns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installed (scripts/dev setup installs it)"
)

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402

from test.helpers.fleet import FleetProbe  # noqa: E402
from test.helpers.graph import real_frames, stamp_of_msg  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402
from test.helpers.servers import free_port, stop_process  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ROBOT, CAMERAS = "r1", ("cam_a", "cam_b", "cam_c")
PORT = free_port()
REPLICA_PORTS = (free_port(), free_port())
SOURCE_LVLM = 2
STATUS_OK, STATUS_REJECTED = 0, 3


def fleet(**arguments: str) -> launch.LaunchDescription:
    from spotvlm_ros.ros.distro import localhost_discovery

    localhost_discovery()
    source = PythonLaunchDescriptionSource(
        [FindPackageShare("spotvlm_ros"), "/launch/fleet.launch.py"]
    )
    common = {
        "robot": ROBOT,
        "camera_topic": "/{robot}/{camera}/image_raw",
        "model_path": str(tiny_model_dir()),
        "lvlm_model": "detector",
        "deadline": "2.0",
        "respawn_delay": "0.5",
    }
    return launch.LaunchDescription(
        [
            IncludeLaunchDescription(source, launch_arguments={**common, **arguments}.items()),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@launch_pytest.fixture
def three_cameras() -> launch.LaunchDescription:
    """Three graphs and the local server, which serves two requests at once (429 beyond)."""
    return fleet(
        cameras=",".join(CAMERAS),
        start_server="true",
        server_port=str(PORT),
        server_latency="0.6",
        server_args="--max-concurrency 2 --retry-after 1",
        base_url=f"http://127.0.0.1:{PORT}/v1",
    )


def health(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def probe_for(cameras: tuple[str, ...]) -> FleetProbe:
    return FleetProbe(
        {c: f"/{ROBOT}/{c}" for c in cameras},
        {c: f"/{ROBOT}/{c}/image_raw" for c in cameras},
    )


@pytest.mark.launch(fixture=three_cameras)
def test_three_cameras_share_a_saturated_server_and_every_frame_stays_with_its_camera() -> None:
    probe = probe_for(CAMERAS)
    try:
        probe.wait_for(lambda: _up(PORT), 120.0, "the LVLM server")
        probe.wait_ready(timeout=180.0)
        frames = real_frames(8)
        probe.warm_up(frames[0], timeout=180.0)
        for camera in CAMERAS:
            probe.answers[camera].clear()
            probe.lvlm[camera].clear()
        sent = probe.stream(frames * 3, hz=2.0)  # 12 s, 3 cameras: ~6 requests/s offered
        for camera in CAMERAS:
            probe.wait_for(
                lambda c=camera: len(set(probe.admitted[c]) & set(sent[c])) >= len(sent[c]) - 1,
                30.0,
                f"{camera}'s frames admitted (a best-effort camera may lose one)",
            )
            admitted = set(probe.admitted[camera]) & set(sent[camera])
            probe.wait_for(
                lambda c=camera, a=admitted: a <= {stamp_of_msg(x) for x in probe.answers[c]},
                30.0,
                f"an answer for every admitted frame of {camera}",
            )
        for camera in CAMERAS:
            mine = set(sent[camera])
            answers = [a for a in probe.answers[camera] if stamp_of_msg(a) in mine]
            stamps = [stamp_of_msg(a) for a in answers]
            assert len(stamps) == len(set(stamps)), f"{camera}: a frame answered twice"
            # nothing from another camera: every answer is one of this camera's frames
            others = {s for c in CAMERAS if c != camera for s in sent[c]}
            assert not others & {stamp_of_msg(a) for a in probe.answers[camera]}, camera
            assert all(a.header.frame_id == camera for a in answers), camera
            lvlm = [r for r in probe.lvlm[camera] if stamp_of_msg(r) in mine]
            assert all(r.header.frame_id == camera for r in lvlm), camera
        # the server was saturated (two at a time, three cameras): it answered 429 ...
        refused = health(PORT)["refused_busy"]
        assert refused > 0, "the server never answered 429: the test did not saturate it"
        rejected = {
            c: [r for r in probe.lvlm[c] if r.status == STATUS_REJECTED and "429" in r.error]
            for c in CAMERAS
        }
        assert any(rejected.values()), "no bridge saw a 429"
        # ... the bridges held and widened their uploads (not retried blindly) ...
        backoffs = [int(v["backoffs"]) for v in probe.diagnostic_values("cloud_bridge: LVLM")]
        assert len(backoffs) == len(CAMERAS) and sum(backoffs) >= 1, backoffs
        uploads = sum(
            len([r for r in probe.lvlm[c] if stamp_of_msg(r) in set(sent[c])]) for c in CAMERAS
        )
        admitted_all = sum(len(set(probe.admitted[c]) & set(sent[c])) for c in CAMERAS)
        # ~6 frames/s offered, at most 2 served at once for 0.6 s each (~3.3/s)
        assert uploads < 0.9 * admitted_all, (uploads, admitted_all)
        # ... and recovered: after its last 429 each such bridge gets LVLM answers again (a
        # 429 near the stream's end holds uploads and widens their spacing: frames go on
        # until the recovery shows, however long the hold lasts on this machine)
        for camera, refusals in rejected.items():
            if refusals:
                last = max(stamp_of_msg(r) for r in refusals)
                probe.feed_until(
                    camera,
                    frames[0],
                    lambda c=camera, t=last: any(
                        r.status == STATUS_OK and stamp_of_msg(r) > t for r in probe.lvlm[c]
                    ),
                    120.0,
                    f"{camera}: an LVLM answer after its last 429",
                )
        print(
            "fleet: "
            + ", ".join(
                f"{c}: {len(sent[c])} sent, "
                f"{sum(r.status == STATUS_OK for r in probe.lvlm[c])} LVLM answers, "
                f"{len(rejected[c])} x 429"
                for c in CAMERAS
            )
            + f"; server refused {refused} with 429; bridges' back-offs {backoffs}"
        )
    finally:
        probe.close()


def _up(port: int) -> bool:
    try:
        health(port)
        return True
    except OSError:
        return False


def start_replica(port: int) -> subprocess.Popen[bytes]:
    detector = ROOT.parent / "shared" / "models" / "centernet_mobilenetv3_coco.onnx"
    log = open(ROOT / "log" / f"replica-{port}.log", "ab")  # noqa: SIM115 - lives with it
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "spotvlm_ros.cloud.server"),
            *("--port", str(port), "--latency", "0.3", "--log-level", "warning"),
            *("--detector-model", str(detector)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    procs = {port: start_replica(port) for port in REPLICA_PORTS}
    yield procs
    for proc in procs.values():
        stop_process(proc, signal.SIGTERM, 10.0)


@launch_pytest.fixture
def one_camera_two_replicas() -> launch.LaunchDescription:
    urls = ",".join(f"http://127.0.0.1:{p}/v1" for p in REPLICA_PORTS)
    # a dead replica is retried after 1 s, 2 s, then every 3 s (the default caps at 60 s)
    params = ROOT / "log" / "fleet-replicas-params.yaml"
    params.parent.mkdir(exist_ok=True)
    params.write_text(
        "/**/cloud_bridge:\n  ros__parameters:\n"
        "    endpoint_backoff_s: 1.0\n    endpoint_max_backoff_s: 3.0\n"
    )
    return fleet(cameras="cam_a", base_url=urls, check_lvlm="false", params_file=str(params))


@pytest.mark.launch(fixture=one_camera_two_replicas)
def test_a_replica_killed_mid_run_is_skipped_and_used_again_once_it_returns(
    replicas: dict[int, subprocess.Popen[bytes]],
) -> None:
    import threading

    dead_port, live_port = REPLICA_PORTS
    probe = probe_for(("cam_a",))
    try:
        for port in REPLICA_PORTS:
            probe.wait_for(lambda p=port: _up(p), 60.0, f"replica {port}")
        probe.wait_ready(timeout=180.0)
        frames = real_frames(8)
        probe.warm_up(frames[0], timeout=180.0)
        sent: dict[str, list[int]] = {}
        stream = threading.Thread(
            target=lambda: sent.update(probe.stream(frames * 6, hz=2.0))  # 24 s
        )
        stream.start()
        time.sleep(3.0)
        os.kill(replicas[dead_port].pid, signal.SIGKILL)
        replicas[dead_port].wait()
        killed = time.monotonic()
        live_before = health(live_port)["served"]
        # answers kept coming from the live replica while the other was dead
        probe.wait_for(
            lambda: any(
                killed + 1.0 < t and r.status == STATUS_OK
                for t, r in list(probe.lvlm_arrivals["cam_a"])
            ),
            60.0,
            "an LVLM answer while one replica was dead",
        )
        probe.wait_for(
            lambda: health(live_port)["served"] > live_before, 30.0, "the live replica serving"
        )
        replicas[dead_port] = start_replica(dead_port)
        probe.wait_for(lambda: _up(dead_port), 60.0, "the killed replica back")
        stream.join()
        # back-offs of 1 s, 2 s, then 3 s: the returned replica is tried again and answers
        # (frames go on until it is, if the stream ended first)
        probe.feed_until(
            "cam_a",
            frames[0],
            lambda: health(dead_port)["served"] > 0,
            120.0,
            "the returned replica to be used",
        )
        admitted = set(probe.admitted["cam_a"]) & set(sent["cam_a"])
        probe.wait_for(
            lambda: admitted <= {stamp_of_msg(a) for a in probe.answers["cam_a"]},
            30.0,
            "an answer for every admitted frame",
        )
        stamps = [stamp_of_msg(a) for a in probe.answers["cam_a"] if stamp_of_msg(a) in admitted]
        assert len(stamps) == len(set(stamps)) == len(admitted)
        endpoint = probe.diagnostic_values("cloud_bridge: LVLM")[0]
        print(
            "replicas: "
            + "; ".join(f"{k}: {v}" for k, v in endpoint.items() if k.startswith("endpoint"))
        )
    finally:
        probe.close()
