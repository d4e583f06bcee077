"""`ros2 launch spotvlm_ros spotvlm.launch.py ...` exactly as a user types it: a bag made
from ../shared/data replayed through the whole graph, bags in other tools' layouts, launch
arguments that cannot work, and a clean shutdown."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test.helpers.graph import SHARED, Probe, check_sources
from test.helpers.models import tiny_model_dir
from test.helpers.servers import free_port

pytestmark = pytest.mark.integration

if shutil.which("ros2") is None:
    pytest.skip("no `ros2` command (scripts/dev setup installs ros2cli)", allow_module_level=True)

FAST = {"svlm_node": {"max_new_tokens": 8}}


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe("ros2_launch_probe", overlays=False, camera=False)
    yield p
    p.close()


def ros2_launch(*arguments: str, timeout: float, log: Path) -> tuple[int, str, float]:
    """Run ``ros2 launch spotvlm_ros spotvlm.launch.py ARGUMENTS``; returns its exit status,
    output and wall time."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(
            ["ros2", "launch", "spotvlm_ros", "spotvlm.launch.py", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # as when started in the background by a script (`cmd &`): SIGINT ignored, which
            # the nodes inherited, so that launch's SIGINT once did not stop them
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    return proc.returncode, log.read_text(errors="replace"), time.monotonic() - started


def params_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    body = {f"/**/{n}": {"ros__parameters": v} for n, v in FAST.items()}
    path.write_text(yaml.safe_dump(body))
    return path


def assert_clean(output: str) -> None:
    """Every process exited on SIGINT by itself, with no traceback and no error line."""
    for bad in ("Traceback", "failed to terminate", "SIGKILL", "process has died", "rosout"):
        assert bad not in output, f"{bad!r} in the launch output:\n{output[-4000:]}"
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert not errors, errors


def test_a_bag_from_the_shared_data_is_answered_frame_by_frame(
    tmp_path: Path, probe: Probe
) -> None:
    from spotvlm_ros.data.bag import main as make_bag
    from spotvlm_ros.ros.convert import stamp_of

    bag = tmp_path / "camvid"
    frames = 8
    camvid = str(SHARED / "data" / "camvid_seq05vd")
    assert make_bag(["camvid", camvid, str(bag), "--limit", str(frames), "--rate", "2"]) == 0
    port = free_port()
    rc, output, _ = ros2_launch(
        f"model_path:={tiny_model_dir()}",
        "start_server:=true",
        f"server_port:={port}",
        f"base_url:=http://127.0.0.1:{port}/v1",
        f"bag:={bag}",
        "evaluate:=true",
        f"report_dir:={tmp_path / 'report'}",
        f"params_file:={params_file(tmp_path)}",
        timeout=240,
        log=tmp_path / "launch.log",
    )
    assert rc == 0, output[-4000:]
    assert "svlm_node is active: starting the bag player" in output
    # the bag is held until svlm_node is active: camera_ingest says what it waits for, and
    # does not warn of a silent camera while no frame is wanted or when the bag comes
    assert "no camera frame for" not in output, output[-4000:]
    answers = probe.answers
    assert len(answers) == frames, [(a.frame_seq, a.source) for a in answers]
    assert len({stamp_of(a.header.stamp) for a in answers}) == frames  # one per frame
    assert sorted(a.frame_seq for a in answers) == list(range(frames))
    # from the models (how many make the 1 s deadline depends on the machine's speed and load)
    counts = check_sources(probe, answers)
    assert counts[1] + counts[2] >= 1, [a.source for a in answers]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["final_answers"] == report["frames_with_truth"] == frames, report
    assert_clean(output)


def _write_bag(path: Path, topic: str, msgtype: str, images: list[str]) -> None:
    """A bag the way other converters lay it out: one camera topic, 2 Hz, no ground truth."""
    import cv2
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from spotvlm_ros.data.bag import image_message

    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    with Writer(path, version=9) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=store)
        for i, file in enumerate(images):
            stamp = 1_533_000_000 * 10**9 + i * 500_000_000
            sec, nanosec = divmod(stamp, 10**9)
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                frame_id="CAM_FRONT",
            )
            compressed = msgtype.endswith("CompressedImage")
            msg = image_message(store, header, cv2.imread(file), compressed)
            writer.write(connection, stamp, store.serialize_cdr(msg, msgtype))


@pytest.mark.parametrize(
    ("topic", "msgtype", "transport"),
    [
        ("/CAM_FRONT/image_rect_compressed", "sensor_msgs/msg/CompressedImage", "auto"),
        ("/nuscenes/CAM_FRONT/image_raw", "sensor_msgs/msg/Image", "auto"),
        # a fixed transport is subscribed before the bag plays: it must still be met
        ("/CAM_FRONT/image_rect_compressed", "sensor_msgs/msg/CompressedImage", "compressed"),
    ],
)
def test_bags_in_other_converters_layouts_play_by_setting_only_the_topic(
    tmp_path: Path, probe: Probe, topic: str, msgtype: str, transport: str
) -> None:
    images = sorted(glob.glob(str(SHARED / "data" / "nuscenes_mini" / "samples" / "CAM_*/*.jpg")))
    assert len(images) >= 6, images
    bag = tmp_path / "bag"
    _write_bag(bag, topic, msgtype, images[:6])
    rc, output, _ = ros2_launch(
        f"model_path:={tiny_model_dir()}",
        "cloud:=false",
        f"camera_topic:={topic}",
        f"transport:={transport}",
        f"bag:={bag}",
        "vocabulary:=nuscenes",
        f"params_file:={params_file(tmp_path)}",
        timeout=240,
        log=tmp_path / "launch.log",
    )
    assert rc == 0, output[-4000:]
    kind = msgtype.rsplit("/", 1)[1]
    assert f"admitting {kind} from {topic}" in output, output[-4000:]
    assert sorted(a.frame_seq for a in probe.answers) == list(range(6)), output[-3000:]
    assert check_sources(probe, probe.answers)[1] >= 1, [a.source for a in probe.answers]
    assert_clean(output)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model_path:=/nonexistent/Qwen2.5-VL-3B"], "model_path '/nonexistent/Qwen2.5-VL-3B'"),
        (["base_url:=http://127.0.0.1:{dead}/v1"], "cannot reach the LVLM server"),
        (["task:=kitchen"], "task:='kitchen'"),
        (["vocabulary:=hagrid"], "task 'objects' takes the vocabularies bdd100k, nuscenes, coco"),
        (["bag:=/nonexistent/bag"], "is not a rosbag2 folder"),
        (["start_server:=true", "server_port:=8123"], "points elsewhere"),
    ],
)
def test_arguments_that_cannot_work_stop_the_launch_with_one_message(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    model = f"model_path:={tiny_model_dir()}"
    given = [a.format(dead=free_port()) for a in arguments]
    if not any(a.startswith("model_path") for a in given):
        given.insert(0, model)
    rc, output, wall = ros2_launch(*given, timeout=60, log=tmp_path / "launch.log")
    assert rc != 0, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and message in errors[0], output
    assert "Traceback" not in output
    assert "process started" not in output  # nothing was started
    assert wall < 60.0, wall  # at once: no node was started (a few s; generous for CI)


def test_a_model_folder_that_does_not_load_stops_the_launch(tmp_path: Path) -> None:
    """It passes the argument check (a folder with a config.json), but configure fails:
    the launch stops, naming svlm_node, instead of waiting for an SVLM that never comes."""
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    rc, output, wall = ros2_launch(
        f"model_path:={broken}", "cloud:=false", timeout=120, log=tmp_path / "launch.log"
    )
    assert rc != 0, output
    assert "svlm_node cannot configure" in output, output[-3000:]
    assert "svlm_node could not configure (its error is above): stopping" in output
    assert "Traceback" not in output
    assert wall < 150.0, wall  # not the launch timeout: it stopped by itself


def test_a_compressed_bag_meets_the_default_topics(tmp_path: Path, probe: Probe) -> None:
    """spotvlm-make-bag --compressed writes <base>/compressed, which the launch file's
    defaults find (image_transport's naming): no topic to set."""
    from spotvlm_ros.data.bag import main as make_bag

    bag = tmp_path / "bag"
    camvid = str(SHARED / "data" / "camvid_seq05vd")
    assert (
        make_bag(["camvid", camvid, str(bag), "--limit", "4", "--rate", "2", "--compressed"]) == 0
    )
    rc, output, _ = ros2_launch(
        f"model_path:={tiny_model_dir()}",
        "cloud:=false",
        f"bag:={bag}",
        f"params_file:={params_file(tmp_path)}",
        timeout=240,
        log=tmp_path / "launch.log",
    )
    assert rc == 0, output[-4000:]
    assert "admitting CompressedImage from /camera/image_raw/compressed" in output
    assert sorted(a.frame_seq for a in probe.answers) == list(range(4)), output[-3000:]


def test_a_wrong_camera_topic_is_said_loudly_and_the_run_fails(tmp_path: Path) -> None:
    """The camera is on /camera/image_raw, camera_ingest is told /front/image: it names what
    it sees within seconds, the evaluator scores nothing and the launch exits non-zero."""
    from spotvlm_ros.data.bag import main as make_bag

    bag = tmp_path / "bag"
    camvid = str(SHARED / "data" / "camvid_seq05vd")
    assert make_bag(["camvid", camvid, str(bag), "--limit", "4", "--rate", "2"]) == 0
    rc, output, _ = ros2_launch(
        f"model_path:={tiny_model_dir()}",
        "cloud:=false",
        "camera_topic:=/front/image",
        f"bag:={bag}",
        "evaluate:=true",
        f"report_dir:={tmp_path / 'report'}",
        timeout=240,
        log=tmp_path / "launch.log",
    )
    assert rc != 0, output[-4000:]
    warnings = [line for line in output.splitlines() if "no camera frame for" in line]
    assert warnings and all("no camera publisher on /front/image" in w for w in warnings)
    # once the bag player publishes, camera_ingest names its topic at once
    naming = [w for w in warnings if "/camera/image_raw [Image, 1 publisher(s), reliable]" in w]
    assert naming and "camera_topic:=TOPIC" in naming[0], warnings
    assert "no frame was scored" in output
    assert "the evaluator scored no frame" in output


@pytest.mark.parametrize("launch_file", ["spotvlm.launch.py", "fleet.launch.py"])
def test_ctrl_c_in_a_terminal_stops_every_node_cleanly(tmp_path: Path, launch_file: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground group: every node gets SIGINT
    from the terminal and again from launch. Each must still exit cleanly (once, the second
    SIGINT killed them on their way out: exit -2 and a KeyboardInterrupt traceback)."""
    log = tmp_path / "launch.log"
    arguments = [f"model_path:={tiny_model_dir()}", "cloud:=false"]
    if launch_file == "fleet.launch.py":
        arguments.append("cameras:=cam_a,cam_b")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["ros2", "launch", "spotvlm_ros", launch_file, *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        try:
            expected = 2 if launch_file == "fleet.launch.py" else 1
            deadline = time.monotonic() + 120.0
            while log.read_text(errors="replace").count("active: answering frames") < expected:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "svlm_node never became active"
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text(errors="replace")
    assert output.count("process has finished cleanly") == 3 * expected, output[-3000:]
    assert_clean(output)


def _task_through_launch(
    tmp_path: Path, name: str, bag: Path, table: list[dict[str, str]], truth: dict[int, set[str]]
) -> tuple[Probe, list[Any]]:
    """``ros2 launch ... task:=NAME`` on ``bag`` with the table LVLM; checks what every task
    must hold and returns the probe (closed) and the recorded LVLM requests."""
    from spotvlm_ros.core.task import task_question
    from test.helpers.table_lvlm import requests_of, table_lvlm

    probe = Probe(f"{name}_probe", overlays=False, camera=False, detections=True)
    try:
        with table_lvlm(table, tmp_path) as (url, record):
            rc, output, _ = ros2_launch(
                f"model_path:={tiny_model_dir()}",
                f"task:={name}",
                f"base_url:={url}",
                f"bag:={bag}",
                "evaluate:=true",
                f"report_dir:={tmp_path / 'report'}",
                f"params_file:={params_file(tmp_path)}",
                timeout=240,
                log=tmp_path / "launch.log",
            )
            asked = requests_of(record)
        assert rc == 0, output[-4000:]
        frames = len(truth)
        answers = probe.answers
        assert sorted(a.frame_seq for a in answers) == list(range(frames)), output[-3000:]
        check_sources(probe, answers)
        assert any(r.status == 0 for r in probe.lvlm), "no LVLM answer reached the graph"
        # the SVLM and the LVLM were asked the task's question, and the server was told
        assert {r.question for r in probe.svlm} == {task_question(name)}
        assert {a["task"] for a in asked} == {name}
        # every LVLM result came from a request the server saw (one still in flight when the
        # bag ended is asked but never published: the graph stopped)
        assert 0 < len(probe.lvlm) <= len(asked)
        report = json.loads((tmp_path / "report" / "report.json").read_text())
        assert report["frames_with_truth"] == frames
        right = sum(set(a.labels) == truth[a.frame_seq] for a in answers)
        if name == "gesture":
            assert report["scores"]["final"]["accuracy"] == pytest.approx(right / frames)
        assert_clean(output)
        return probe, asked
    finally:
        probe.close()


def test_the_gesture_task_through_the_live_graph(tmp_path: Path) -> None:
    """`ros2 launch ... task:=gesture` on a HaGRID bag, the LVLM a server answering the
    gesture question from a reply table: every frame answered once; each LVLM result is one
    class with the hand's one box, published as one Detection2D; the SVLM was asked the
    gesture question; the evaluator scores accuracy by frame."""
    from spotvlm_ros.data.bag import main as make_bag
    from spotvlm_ros.ros.convert import stamp_of
    from test.evaluation.test_tasks import hagrid_table

    hagrid = SHARED / "data" / "hagrid_gestures"
    bag, hold, classes = tmp_path / "gestures", 4, 2
    assert make_bag(["hagrid", str(hagrid), str(bag), "--limit", str(hold * classes)]) == 0
    table, _ = hagrid_table(classes)  # call and dislike, answered right
    truth = {n: {"call"} if n < hold else {"dislike"} for n in range(hold * classes)}
    probe, _ = _task_through_launch(tmp_path, "gesture", bag, table, truth)
    ok = [r for r in probe.lvlm if r.status == 0]
    for result in ok:  # one class, the hand's one box, both what the table said
        assert set(result.labels) == truth[result.frame_seq], result
        assert [r.label for r in result.rois] == list(result.labels)
    lvlm_boxes = {stamp_of(d.header.stamp): d for d in probe.lvlm_detections}
    for result in ok:  # one Detection2D: the class and the hand's box
        array = lvlm_boxes[stamp_of(result.header.stamp)]
        assert [d.results[0].hypothesis.class_id for d in array.detections] == list(result.labels)
    for answer in probe.answers:  # an answer is one class or none, never two
        assert len(answer.labels) <= 1


def test_the_caption_task_through_the_live_graph(tmp_path: Path) -> None:
    """`ros2 launch ... task:=caption` on an ACE bag: captions parsed into the actions they
    name; the LVLM's captions reach the SVLM's context as caption turns."""
    from spotvlm_ros.data.bag import main as make_bag
    from test.data.test_task_readers import write_ace

    write_ace(tmp_path / "ace")
    bag = tmp_path / "captions"
    assert make_bag(["ace", str(tmp_path / "ace"), str(bag)]) == 0
    images = tmp_path / "ace" / "omelette-1" / "image_jpg"
    said = {0: "The person waits.", 15: "The person waits.", 30: "The person cracks an egg.",
            45: "The person cracks an egg.", 60: "The person stirs the eggs.",
            75: "The person stirs the eggs."}  # fmt: skip
    table = [{"image": str(images / f"{n}.jpg"), "reply": text} for n, text in said.items()]
    actions = [set(), set(), {"breaking"}, {"breaking"}, {"mixing"}, {"mixing"}]
    probe, _ = _task_through_launch(tmp_path, "caption", bag, table, dict(enumerate(actions)))
    for result in (r for r in probe.lvlm if r.status == 0):
        assert set(result.labels) == actions[result.frame_seq], result
    contexts = [r.context_text for r in probe.svlm if r.context_text]
    assert all(c.startswith("What the person was doing") for c in contexts), contexts
