"""Readers of the gesture and caption tasks' datasets (no ROS).

- ``hagrid``: HaGRID images (``metadata.jsonl`` + ``images/<class>/<id>.jpg``, e.g. the
  shared 19-class sample) made into a sequence: each gesture held for ``hold`` frames, as a
  person holds it in front of a robot (a few pixels of hand shake between frames), then the
  next person's gesture.
- ``ipn``: IPN Hand in its published layout: ``annotations/Annot_List.txt`` (or
  ``Annot_TestList.txt``/``Annot_TrainList.txt``: ``video,label,id,t_start,t_end,frames``,
  frames 1-based and inclusive) and ``frames/<video>/<video>_<frame:06d>.jpg`` at 30 fps.
- ``ace``: ACE, Actions for Cooking Eggs (the ICPR 2012 KSCGR contest data): one folder
  per sequence, ``<sequence>/image_jpg/<n>.jpg`` and ``<sequence>/labels.txt`` (one line
  per frame, ``<frame>\\t<label>``: 1 breaking, 2 mixing, 3 baking, 4 turning, 5 cutting,
  6 boiling, 7 seasoning, 8 peeling, anything else none), read at 30 fps.

Every reader samples the source down to ``fps`` frames per second (the task rate, 1-2 Hz in
the paper), yields frames in time order with the ground truth in the task vocabulary (a
gesture class; the action, or the empty set for 'none'), and raises DatasetError naming
what it expected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.core.vocab import IPN_GESTURES, Vocabulary
from spotvlm_ros.data.frames import DatasetError, LabelledFrame, read_rgb

IPN_FPS = 30.0
ACE_FPS = 30.0
ACE_LABELS = {
    1: "breaking",
    2: "mixing",
    3: "baking",
    4: "turning",
    5: "cutting",
    6: "boiling",
    7: "seasoning",
    8: "peeling",
}
"""labels.txt's numbers; any other (the published files use -1000) is 'none'."""


def _shaken(load: Callable[[], np.ndarray], dx: int, dy: int) -> Callable[[], np.ndarray]:
    """The image moved by (dx, dy) pixels, edges repeated: a held hand is never still."""

    def shaken() -> np.ndarray:
        image = load()
        if dx == dy == 0:
            return image
        h, w = image.shape[:2]
        ys = np.clip(np.arange(h) - dy, 0, h - 1)
        xs = np.clip(np.arange(w) - dx, 0, w - 1)
        return np.ascontiguousarray(image[ys][:, xs])

    return shaken


SHAKE = ((0, 0), (2, 1), (-1, 2), (1, -2), (-2, -1), (2, 2))


def hagrid(
    root: Path,
    vocab: Vocabulary,
    fps: float = 2.0,
    hold: int = 4,
    per_class: int = 1,
) -> Iterator[LabelledFrame]:
    """HaGRID as a gesture sequence: ``per_class`` images of every class, the classes taken
    in turn (call, dislike, ..., then the next image of each), each held ``hold`` frames
    at ``fps``."""
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DatasetError(f"{meta} not found: expected HaGRID's metadata.jsonl (label, id)")
    if hold < 1 or per_class < 1:
        raise DatasetError(f"hold and per_class must be >= 1, got {hold}, {per_class}")
    by_class: dict[str, list[Path]] = {}
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label, name = str(row["label"]), str(row["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{meta}:{number}: not a HaGRID record ({exc})") from None
        path = root / "images" / label / f"{name}.jpg"
        if not path.is_file():
            raise DatasetError(f"{path} not found (named in {meta}:{number})")
        by_class.setdefault(label, []).append(path)
    if not by_class:
        raise DatasetError(f"{meta}: no records")
    unknown = sorted(c for c in by_class if not vocab.normalize(c))
    if unknown:
        raise DatasetError(f"{meta}: classes outside the {vocab.name} vocabulary: {unknown}")
    i = 0
    for round_ in range(per_class):
        for label in sorted(by_class):
            paths = sorted(by_class[label])
            if round_ >= len(paths):
                continue
            path = paths[round_]
            truth = vocab.normalize(label)
            for k in range(hold):
                dx, dy = SHAKE[k % len(SHAKE)]
                yield LabelledFrame(
                    f"{path.stem}-{k}",
                    round(i / fps * NS_PER_S),
                    _shaken(read_rgb(path), dx, dy),
                    truth,
                )
                i += 1


def _ipn_annotations(root: Path, split: str) -> tuple[Path, list[tuple[str, str, int, int]]]:
    names = {
        "all": "Annot_List.txt",
        "train": "Annot_TrainList.txt",
        "test": "Annot_TestList.txt",
    }
    if split not in names:
        raise DatasetError(f"IPN split {split!r}: choose one of {', '.join(names)}")
    path = root / "annotations" / names[split]
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: expected IPN Hand's annotations (video,label,id,t_start,t_end,"
            "frames per line)"
        )
    segments = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or fields[0] == "video":  # Annot_List.txt's header
            continue
        try:
            video, code, start, end = fields[0], fields[1], int(fields[3]), int(fields[4])
        except (IndexError, ValueError):
            raise DatasetError(
                f"{path}:{number}: expected video,label,id,t_start,t_end,frames, got {line!r}"
            ) from None
        if start < 1 or end < start:
            raise DatasetError(f"{path}:{number}: frames {start}..{end} (1-based, inclusive)")
        segments.append((video, code, start, end))
    if not segments:
        raise DatasetError(f"{path}: no segments")
    return path, segments


def ipn(
    root: Path, vocab: Vocabulary, fps: float = 2.0, split: str = "test", videos: int = 0
) -> Iterator[LabelledFrame]:
    """IPN Hand's annotated videos (``split``: all, train or test; ``videos``: at most this
    many, 0 = all), each sampled at ``fps``, one video after another."""
    path, segments = _ipn_annotations(root, split)
    codes = {code: label for label, (code, _) in IPN_GESTURES.items()}
    by_video: dict[str, list[tuple[int, int, str]]] = {}
    for video, code, start, end in segments:
        if code not in codes:
            raise DatasetError(f"{path}: unknown class {code!r} (expected {', '.join(codes)})")
        by_video.setdefault(video, []).append((start, end, codes[code]))
    step = max(1, round(IPN_FPS / fps))
    offset = 0
    for n, video in enumerate(sorted(by_video)):
        if videos and n >= videos:
            break
        folder = root / "frames" / video
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found (video {video} of {path})")
        spans = sorted(by_video[video])
        last = spans[-1][1]
        stamp = offset
        for frame in range(1, last + 1, step):
            label = next((lab for start, end, lab in spans if start <= frame <= end), None)
            if label is None:
                continue  # a frame no segment covers is unlabelled: left out
            image = folder / f"{video}_{frame:06d}.jpg"
            if not image.is_file():
                raise DatasetError(f"{image} not found (frame {frame} of {video})")
            stamp = offset + round((frame - 1) / IPN_FPS * NS_PER_S)
            yield LabelledFrame(
                image.stem, stamp, read_rgb(image), vocab.normalize(label), camera=video
            )
        offset = stamp + NS_PER_S  # a second between videos


def ace(
    root: Path, vocab: Vocabulary, fps: float = 2.0, sequences: int = 0
) -> Iterator[LabelledFrame]:
    """ACE's sequences (every folder of ``root`` holding labels.txt and image_jpg/, or
    ``root`` itself), each sampled at ``fps``, one after another; ``sequences``: at most
    this many, 0 = all."""
    folders = (
        [root]
        if (root / "labels.txt").is_file()
        else sorted(p for p in root.iterdir() if (p / "labels.txt").is_file())
        if root.is_dir()
        else []
    )
    if not folders:
        raise DatasetError(
            f"no ACE sequence under {root}: expected <sequence>/labels.txt and "
            "<sequence>/image_jpg/<n>.jpg"
        )
    step = max(1, round(ACE_FPS / fps))
    offset = 0
    for n, folder in enumerate(folders):
        if sequences and n >= sequences:
            break
        labels: dict[int, str] = {}
        labels_file = folder / "labels.txt"
        for number, line in enumerate(labels_file.read_text().splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                frame, value = int(fields[0]), int(float(fields[1]))
            except ValueError:
                raise DatasetError(
                    f"{labels_file}:{number}: expected '<frame><TAB><label>', got {line!r}"
                ) from None
            labels[frame] = ACE_LABELS.get(value, "none")
        if not labels:
            raise DatasetError(f"{labels_file}: no labelled frames")
        stamp = offset
        first = min(labels)
        for frame in range(first, max(labels) + 1, step):
            if frame not in labels:
                continue
            image = folder / "image_jpg" / f"{frame}.jpg"
            if not image.is_file():
                raise DatasetError(f"{image} not found (frame {frame} of {labels_file})")
            action = labels[frame]
            truth = frozenset() if action == "none" else vocab.normalize(action)
            stamp = offset + round((frame - first) / ACE_FPS * NS_PER_S)
            yield LabelledFrame(
                f"{folder.name}-{frame}", stamp, read_rgb(image), truth, camera=folder.name
            )
        offset = stamp + NS_PER_S
