"""The bag converter on the real data of ../shared/data, and a round trip through the bag
player over DDS."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.core.vocab import vocabulary
from spotvlm_ros.data.bag import BAG_EPOCH_NS, CAMERA_TOPIC, TRUTH_TOPIC, main, typestore
from spotvlm_ros.data.frames import DatasetError
from spotvlm_ros.data.sequences import camvid

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"

if not (DATA / "camvid_seq05vd").is_dir():
    pytest.skip(f"no dataset under {DATA}", allow_module_level=True)


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    from rosbags.rosbag2 import Reader

    store = typestore()
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for connection, stamp, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            out.setdefault(connection.topic, []).append((stamp, msg))
    return out


def test_camvid_bag_has_every_frame_at_1_hz_with_its_ground_truth(tmp_path: Path) -> None:
    assert main(["camvid", str(DATA / "camvid_seq05vd"), str(tmp_path / "b"), "--limit", "8"]) == 0
    topics = read_bag(tmp_path / "b")
    images, truths = topics[CAMERA_TOPIC], topics[TRUTH_TOPIC]
    assert len(images) == len(truths) == 8
    assert [s for s, _ in images] == [BAG_EPOCH_NS + i * NS_PER_S for i in range(8)]
    first = images[0][1]
    assert (first.width, first.height, first.encoding) == (480, 360, "bgr8")  # type: ignore[attr-defined]
    # ground truth: CamVid's classes mapped into the BDD100K vocabulary, boxes alike
    source = list(camvid(DATA / "camvid_seq05vd", vocabulary("bdd100k")))[:8]
    for (stamp, truth), (image_stamp, _), frame in zip(truths, images, source, strict=True):
        assert stamp == image_stamp
        assert set(truth.labels) == set(frame.labels)  # type: ignore[attr-defined]
        assert truth.header.stamp.sec * NS_PER_S + truth.header.stamp.nanosec == stamp  # type: ignore[attr-defined]
        assert {b.label for b in truth.boxes} <= set(truth.labels)  # type: ignore[attr-defined]
    assert any("car" in t.labels for _, t in truths)  # type: ignore[attr-defined]


def test_bdd100k_bag_keeps_the_5_fps_timing_and_scalabel_labels(tmp_path: Path) -> None:
    assert (
        main(["bdd100k", str(DATA / "bdd100k_mot"), str(tmp_path / "b"), "--storage", "mcap"]) == 0
    )
    topics = read_bag(tmp_path / "b")
    stamps = [s for s, _ in topics[CAMERA_TOPIC]]
    assert len(stamps) == 12
    assert stamps[1] - stamps[0] == NS_PER_S // 5
    truths = [t for _, t in topics[TRUTH_TOPIC]]
    assert all("car" in t.labels for t in truths)  # type: ignore[attr-defined]
    assert all(len(t.boxes) > 0 for t in truths)  # type: ignore[attr-defined]


def test_nuscenes_labels_bag_uses_the_keyframe_timestamps(tmp_path: Path) -> None:
    src = DATA / "nuscenes_mini"
    args = ["nuscenes-labels", str(src), str(tmp_path / "b"), "--vocabulary", "nuscenes"]
    assert main(args) == 0
    topics = read_bag(tmp_path / "b")
    stamps = [s for s, _ in topics[CAMERA_TOPIC]]
    assert len(stamps) == 2
    assert stamps[1] - stamps[0] == 500_000_000  # 2 Hz keyframes
    labels = set(topics[TRUTH_TOPIC][0][1].labels)  # type: ignore[attr-defined]
    assert labels == {"car", "pedestrian"}


def test_folder_and_retiming_and_compressed(tmp_path: Path) -> None:
    src = DATA / "camvid_seq05vd" / "images"
    assert (
        main(
            ["folder", str(src), str(tmp_path / "b"), "--limit", "3", "--rate", "4", "--compressed"]
        )
        == 0
    )
    topics = read_bag(tmp_path / "b")
    images = topics[CAMERA_TOPIC + "/compressed"]
    assert [s - images[0][0] for s, _ in images] == [0, NS_PER_S // 4, NS_PER_S // 2]
    assert TRUTH_TOPIC not in topics  # unlabelled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["camvid", "/no/such/dir", "OUT"], "does not exist"),
        (["bdd100k", str(DATA / "camvid_seq05vd"), "OUT"], "no Scalabel label files"),
        (["nuscenes-labels", str(DATA / "bdd100k_mot"), "OUT"], "cam_front_labels_mini_val.json"),
        (["nuscenes", str(DATA / "bdd100k_mot"), "OUT"], "no nuScenes version folder"),
        (["nuscenes", str(DATA / "nuscenes_mini"), "OUT"], "sample_annotation.json not found"),
        (["folder", str(DATA / "bdd100k_mot" / "labels"), "OUT"], "no images"),
    ],
)
def test_bad_dataset_paths_name_what_was_expected(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_existing_output_is_not_overwritten_silently(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    from spotvlm_ros.data.bag import write_bag

    with pytest.raises(DatasetError, match="--overwrite"):
        write_bag(
            camvid(DATA / "camvid_seq05vd", vocabulary("bdd100k")),
            tmp_path / "b",
            task="objects",
            progress=False,
        )


@pytest.mark.integration
def test_round_trip_through_the_bag_player(tmp_path: Path) -> None:
    """The bag player republishes every frame and its ground truth, restamped alike."""
    from test.helpers.graph import Probe

    assert (
        main(
            [
                "camvid",
                str(DATA / "camvid_seq05vd"),
                str(tmp_path / "b"),
                "--limit",
                "6",
                "--rate",
                "5",
            ]
        )
        == 0
    )
    from spotvlm_msgs.msg import GroundTruth
    from spotvlm_ros.ros import qos
    from spotvlm_ros.ros.convert import stamp_of

    probe = Probe("bag_probe", camera=False)
    truths: list[GroundTruth] = []
    images: list[object] = []
    probe.node.create_subscription(GroundTruth, TRUTH_TOPIC, truths.append, qos.RESULTS)
    from sensor_msgs.msg import Image

    probe.node.create_subscription(Image, CAMERA_TOPIC, images.append, qos.RESULTS)
    player = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spotvlm_ros.nodes.bag_player",
            "--ros-args",
            "-p",
            f"bag_path:={tmp_path / 'b'}",
            "-p",
            "exit_when_done:=true",
            "-p",
            "linger_s:=0.5",
        ],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = player.communicate(timeout=60)
        probe.wait_for(lambda: len(images) == 6 and len(truths) == 6, 10, "every message")
    finally:
        probe.close()
        if player.poll() is None:
            player.kill()
    assert player.returncode == 0, out
    image_stamps = [stamp_of(i.header.stamp) for i in images]  # type: ignore[attr-defined]
    assert image_stamps == [stamp_of(t.header.stamp) for t in truths]
    gaps = [b - a for a, b in itertools.pairwise(image_stamps)]
    assert gaps == [NS_PER_S // 5] * 5
    assert image_stamps[0] > BAG_EPOCH_NS + 10**7 * NS_PER_S  # restamped to "now", not 2023
