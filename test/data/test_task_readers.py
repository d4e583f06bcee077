"""Readers of the gesture and caption datasets: HaGRID (the shared frames), IPN Hand and ACE
(fixtures the tests write in the published layouts), and the bags made from them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from spotvlm_ros.core.task import task
from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.data.frames import DatasetError
from spotvlm_ros.data.readers import READERS
from spotvlm_ros.data.tasks import ace, hagrid, ipn

ROOT = Path(__file__).resolve().parents[2]
HAGRID_DIR = ROOT.parent / "shared" / "data" / "hagrid_gestures"
GESTURES = task("gesture")


@pytest.mark.skipif(not HAGRID_DIR.is_dir(), reason="the shared HaGRID frames")
def test_hagrid_becomes_gestures_held_for_several_frames() -> None:
    frames = list(hagrid(HAGRID_DIR, GESTURES.vocabulary(), fps=2.0, hold=3))
    classes = sorted({c for f in frames for c in f.labels or ()})
    assert len(classes) == 19 and "no_gesture" in classes
    assert len(frames) == 19 * 3
    # each gesture is held for three frames at 2 Hz, then the next class's
    for n in range(19):
        held = frames[3 * n : 3 * n + 3]
        assert len({f.labels for f in held}) == 1 and len(held[0].labels or ()) == 1
        assert [f.stamp for f in held] == [(3 * n + k) * NS_PER_S // 2 for k in range(3)]
    first, second = frames[0].load(), frames[1].load()
    assert first.shape == second.shape and first.dtype == np.uint8
    assert not np.array_equal(first, second)  # a held hand shakes by a pixel or two
    assert READERS["hagrid"] is hagrid


def test_a_hagrid_folder_without_its_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"metadata\.jsonl"):
        list(hagrid(tmp_path, GESTURES.vocabulary()))
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"label": "wave", "id": "w1"}) + "\n")
    with pytest.raises(DatasetError, match=r"w1\.jpg not found"):
        list(hagrid(tmp_path, GESTURES.vocabulary()))


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((24, 32, 3), value, np.uint8))


def write_ipn(root: Path) -> None:
    """Two videos in IPN Hand's published layout (annotations/Annot_List.txt with its
    header; frames/<video>/<video>_<frame:06d>.jpg, 1-based)."""
    lines = [
        "video,label,id,t_start,t_end,frames",
        "1CM1_4_R_#229,D0X,1,1,17,17",
        "1CM1_4_R_#229,G11,14,18,55,38",
        "4CM11_1_L_#30,B0A,2,1,30,30",
        "4CM11_1_L_#30,G05,8,31,45,15",
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "Annot_List.txt").write_text("\n".join(lines) + "\n")
    # the train/test lists have no header
    (root / "annotations" / "Annot_TestList.txt").write_text("\n".join(lines[3:]) + "\n")
    for video, last in (("1CM1_4_R_#229", 55), ("4CM11_1_L_#30", 45)):
        for frame in range(1, last + 1):
            _jpeg(root / "frames" / video / f"{video}_{frame:06d}.jpg", frame)


def test_ipn_hand_in_its_published_layout(tmp_path: Path) -> None:
    write_ipn(tmp_path)
    vocab = GESTURES.vocabulary("ipn")
    frames = list(ipn(tmp_path, vocab, fps=2.0, split="all"))
    # every 15th frame (30 fps sampled at 2 Hz) of each video, video after video
    assert [f.name for f in frames] == [
        "1CM1_4_R_#229_000001",
        "1CM1_4_R_#229_000016",
        "1CM1_4_R_#229_000031",
        "1CM1_4_R_#229_000046",
        "4CM11_1_L_#30_000001",
        "4CM11_1_L_#30_000016",
        "4CM11_1_L_#30_000031",
    ]
    assert [sorted(f.labels or ()) for f in frames] == [
        ["non_gesture"],
        ["non_gesture"],  # frame 16: still the first segment (1..17, inclusive)
        ["zoom_out"],
        ["zoom_out"],
        ["point_one"],
        ["point_one"],
        ["throw_left"],
    ]
    stamps = [f.stamp for f in frames]
    assert stamps == sorted(stamps) and stamps[1] == NS_PER_S // 2
    assert int(frames[2].load()[0, 0, 0]) in range(28, 35)  # frame 31's grey level
    test_split = list(ipn(tmp_path, vocab, split="test"))
    assert {f.camera for f in test_split} == {"4CM11_1_L_#30"}


def test_ipn_hand_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Annot_TestList\.txt not found"):
        list(ipn(tmp_path, GESTURES.vocabulary("ipn")))
    write_ipn(tmp_path)
    (tmp_path / "annotations" / "Annot_List.txt").write_text("1CM1_4_R_#229,G99,99,1,5,5\n")
    with pytest.raises(DatasetError, match="unknown class 'G99'"):
        list(ipn(tmp_path, GESTURES.vocabulary("ipn"), split="all"))


def write_ace(root: Path) -> None:
    """One ACE (KSCGR) sequence: image_jpg/<n>.jpg and labels.txt, '<frame>\\t<label>'
    with 1..8 the actions and -1000 none."""
    seq = root / "omelette-1"
    labels = [(n, -1000 if n < 30 else 1 if n < 60 else 2) for n in range(0, 90)]
    seq.mkdir(parents=True)
    (seq / "labels.txt").write_text("".join(f"{n}\t{v}\n" for n, v in labels))
    for n, _ in labels:
        _jpeg(seq / "image_jpg" / f"{n}.jpg", n)


def test_ace_in_the_contest_layout(tmp_path: Path) -> None:
    write_ace(tmp_path)
    frames = list(ace(tmp_path, task("caption").vocabulary(), fps=2.0))
    assert [f.name for f in frames] == [f"omelette-1-{n}" for n in (0, 15, 30, 45, 60, 75)]
    assert [sorted(f.labels or ()) for f in frames] == [
        [],  # none: the empty set, a labelled frame
        [],
        ["breaking"],
        ["breaking"],
        ["mixing"],
        ["mixing"],
    ]
    assert all(f.labels is not None for f in frames)
    # a sequence folder itself is read too
    assert len(list(ace(tmp_path / "omelette-1", task("caption").vocabulary()))) == 6


def test_ace_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no ACE sequence"):
        list(ace(tmp_path, task("caption").vocabulary()))
    write_ace(tmp_path)
    (tmp_path / "omelette-1" / "labels.txt").write_text("0 breaking\n")
    with pytest.raises(DatasetError, match=r"labels\.txt:1: expected"):
        list(ace(tmp_path, task("caption").vocabulary()))


@pytest.mark.skipif(not HAGRID_DIR.is_dir(), reason="the shared HaGRID frames")
def test_a_gesture_bag_carries_the_task_and_its_labels(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    from spotvlm_ros.data.bag import bag_frames, main, typestore

    assert main(["hagrid", str(HAGRID_DIR), str(tmp_path / "bag"), "--limit", "8"]) == 0
    frames = bag_frames(tmp_path / "bag", GESTURES.vocabulary())
    assert [sorted(f.labels or ()) for f in frames] == [["call"]] * 4 + [["dislike"]] * 4
    store = typestore()
    with Reader(tmp_path / "bag") as reader:
        truths = [
            store.deserialize_cdr(raw, c.msgtype)
            for c, _, raw in reader.messages()
            if c.msgtype.endswith("GroundTruth")
        ]
    assert {t.task for t in truths} == {"gesture"}
    write_ace(tmp_path / "ace")
    assert main(["ace", str(tmp_path / "ace"), str(tmp_path / "ace_bag")]) == 0
    with Reader(tmp_path / "ace_bag") as reader:
        texts = [
            store.deserialize_cdr(raw, c.msgtype).text
            for c, _, raw in reader.messages()
            if c.msgtype.endswith("GroundTruth")
        ]
    assert texts == ["none", "none", "breaking", "breaking", "mixing", "mixing"]
    # a task whose vocabulary does not fit the reader's labels is refused
    assert main(["hagrid", str(HAGRID_DIR), str(tmp_path / "x"), "--task", "caption"]) == 2
