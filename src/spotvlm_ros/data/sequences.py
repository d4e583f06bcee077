"""Labelled frame sequences read from dataset folders (no ROS): nuScenes (the official
tables, see ``nuscenes.py``, or the derived CAM_FRONT label JSON), BDD100K MOT (Scalabel),
CamVid (derived labels), a folder of images, a video file.

Every reader yields frames in time order with a stamp, the image (loaded lazily) and the
ground truth mapped into a task vocabulary. A missing or malformed dataset raises
DatasetError naming what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spotvlm_ros.core.types import NS_PER_S, Box, Roi
from spotvlm_ros.core.vocab import Vocabulary
from spotvlm_ros.data.frames import IMAGE_SUFFIXES, DatasetError, LabelledFrame, read_rgb
from spotvlm_ros.imaging import swap_red_blue


def _constant(image: np.ndarray) -> Callable[[], np.ndarray]:
    """A loader of an image already decoded."""
    return lambda: image


def _json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path} not found: expected {what}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}): expected {what}") from exc


def _rois(
    objects: Sequence[tuple[str, Sequence[Any], int | None]], vocab: Vocabulary
) -> tuple[Roi, ...]:
    rois = []
    for label, (x1, y1, x2, y2), track in objects:
        for mapped in sorted(vocab.normalize(label)):
            box = Box.from_corners(x1, y1, x2, y2)
            if not box.is_degenerate():
                rois.append(Roi(mapped, box, 1.0, track))
    return tuple(rois)


def nuscenes_labels(root: Path, vocab: Vocabulary) -> Iterator[LabelledFrame]:
    """nuScenes CAM_FRONT keyframes from the project's derived
    ``cam_front_labels_mini_val.json`` (frames whose image is present); stamps from the
    images' microsecond timestamps (2 Hz keyframes)."""
    data = _json(
        root / "cam_front_labels_mini_val.json",
        "the nuScenes CAM_FRONT label JSON (cam_front_labels_mini_val.json)",
    )
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list):
        raise DatasetError(f"{root / 'cam_front_labels_mini_val.json'}: no 'frames' list")
    present = []
    for frame in frames:
        path = root / frame.get("file", "")
        if frame.get("file") and path.is_file():
            match = re.search(r"__(\d{16})\.", path.name)
            if match is None:
                raise DatasetError(f"{path.name}: no nuScenes microsecond timestamp in the name")
            present.append((int(match.group(1)) * 1000, path, frame))
    if not present:
        raise DatasetError(f"none of the labelled frames' images exist under {root / 'samples'}")
    present.sort(key=lambda item: item[0])
    start = present[0][0]
    for stamp, path, frame in present:
        objects = [(o["label"], o["box2d"], o.get("track_id")) for o in frame.get("objects", [])]
        labels = vocab.normalize_all(frame.get("categories", []))
        yield LabelledFrame(path.name, stamp - start, read_rgb(path), labels, _rois(objects, vocab))


def bdd100k(root: Path, vocab: Vocabulary, fps: float = 5.0) -> Iterator[LabelledFrame]:
    """BDD100K MOT clips: ``images/<clip>/*.jpg`` and ``labels/<clip>.json`` (Scalabel), one
    clip after another, at the dataset's 5 fps (frameIndex / fps)."""
    label_files = sorted((root / "labels").glob("*.json"))
    if not label_files:
        raise DatasetError(f"no Scalabel label files in {root / 'labels'} (expected <clip>.json)")
    offset = 0
    for label_file in label_files:
        entries = _json(label_file, "a Scalabel list of frames")
        if not isinstance(entries, list):
            raise DatasetError(f"{label_file}: expected a list of frames")
        entries = sorted(entries, key=lambda e: e.get("frameIndex", 0))
        first = entries[0].get("frameIndex", 0) if entries else 0
        last_stamp = offset
        for entry in entries:
            path = root / "images" / entry.get("videoName", label_file.stem) / entry["name"]
            if not path.is_file():
                raise DatasetError(f"{path} not found (named in {label_file})")
            objects = [
                (o["category"], [o["box2d"][k] for k in ("x1", "y1", "x2", "y2")], None)
                for o in entry.get("labels", [])
                if "box2d" in o
            ]
            stamp = offset + round((entry.get("frameIndex", 0) - first) / fps * NS_PER_S)
            last_stamp = stamp
            labels = vocab.normalize_all(o[0] for o in objects)
            yield LabelledFrame(entry["name"], stamp, read_rgb(path), labels, _rois(objects, vocab))
        offset = last_stamp + round(NS_PER_S / fps) * 5  # a second between clips


def camvid(root: Path, vocab: Vocabulary, fps: float = 1.0) -> Iterator[LabelledFrame]:
    """CamVid Seq05VD at 1 Hz: ``images/*.png`` and ``derived_labels.json``."""
    data = _json(root / "derived_labels.json", "CamVid derived_labels.json")
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list):
        raise DatasetError(f"{root / 'derived_labels.json'}: no 'frames' list")
    for i, frame in enumerate(frames):
        path = root / "images" / frame["frame"]
        if not path.is_file():
            raise DatasetError(f"{path} not found (named in derived_labels.json)")
        objects = [
            (b["label"], [b["x1"], b["y1"], b["x2"], b["y2"]], None)
            for b in frame.get("approx_boxes_from_cc", [])
        ]
        labels = vocab.normalize_all(frame.get("objects_present", []))
        yield LabelledFrame(
            frame["frame"],
            round(i / fps * NS_PER_S),
            read_rgb(path),
            labels,
            _rois(objects, vocab),
        )


def folder(root: Path, vocab: Vocabulary, fps: float = 2.0) -> Iterator[LabelledFrame]:
    """Every image of a folder, in name order, unlabelled, at ``fps``."""
    del vocab
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of images")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    for i, path in enumerate(paths):
        yield LabelledFrame(path.name, round(i / fps * NS_PER_S), read_rgb(path), None)


def video(path: Path, vocab: Vocabulary, fps: float | None = None) -> Iterator[LabelledFrame]:
    """The frames of a video file, unlabelled, at its own rate (or every frame at ``fps``)."""
    import cv2

    del vocab
    if not path.is_file():
        raise DatasetError(f"{path}: video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"{path}: cannot open as a video")
    rate = fps or capture.get(cv2.CAP_PROP_FPS) or 30.0
    i = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = swap_red_blue(bgr)
            yield LabelledFrame(
                f"{path.stem}-{i:06d}", round(i / rate * NS_PER_S), _constant(rgb), None
            )
            i += 1
    finally:
        capture.release()
    if i == 0:
        raise DatasetError(f"{path}: no frames could be decoded")


def demo(
    root: Path, vocab: Vocabulary, fps: float = 1.0, camvid_frames: int = 30
) -> Iterator[LabelledFrame]:
    """The demo drive: the first CamVid frames, then the BDD100K clips, all at ``fps``;
    ``root`` is the shared data folder."""
    sources = [
        (f for i, f in enumerate(camvid(root / "camvid_seq05vd", vocab)) if i < camvid_frames),
        bdd100k(root / "bdd100k_mot", vocab),
    ]
    i = 0
    for source in sources:
        for frame in source:
            yield LabelledFrame(
                frame.name, round(i / fps * NS_PER_S), frame.load, frame.labels, frame.boxes
            )
            i += 1
