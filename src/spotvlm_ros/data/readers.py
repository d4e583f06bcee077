"""The one registry of dataset readers: ``spotvlm-make-bag KIND`` and ``spotvlm-eval KIND``
take their KIND from here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from spotvlm_ros.data.frames import LabelledFrame
from spotvlm_ros.data.nuscenes import nuscenes_official
from spotvlm_ros.data.sequences import bdd100k, camvid, demo, folder, nuscenes_labels, video
from spotvlm_ros.data.tasks import ace, hagrid, ipn

READERS: dict[str, Callable[..., Iterator[LabelledFrame]]] = {
    "demo": demo,
    "nuscenes": nuscenes_official,
    "nuscenes-labels": nuscenes_labels,
    "bdd100k": bdd100k,
    "camvid": camvid,
    "folder": folder,
    "video": video,
    "hagrid": hagrid,
    "ipn": ipn,
    "ace": ace,
}
"""KIND -> reader(source, vocabulary, **options), each yielding LabelledFrames in time order."""

TASK_OF: dict[str, str] = {"hagrid": "gesture", "ipn": "gesture", "ace": "caption"}
"""The task of a reader's ground truth (the others: objects, or unlabelled)."""

VOCABULARY_OF: dict[str, str] = {"hagrid": "hagrid", "ipn": "ipn", "ace": "ace"}
"""The vocabulary a reader's ground truth is in, where only one fits."""
