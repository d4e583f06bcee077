"""The one registry of dataset readers: ``spotvlm-make-bag KIND`` and ``spotvlm-eval KIND``
take their KIND from here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from spotvlm_ros.data.frames import LabelledFrame
from spotvlm_ros.data.nuscenes import nuscenes_official
from spotvlm_ros.data.sequences import bdd100k, camvid, demo, folder, nuscenes_labels, video

READERS: dict[str, Callable[..., Iterator[LabelledFrame]]] = {
    "demo": demo,
    "nuscenes": nuscenes_official,
    "nuscenes-labels": nuscenes_labels,
    "bdd100k": bdd100k,
    "camvid": camvid,
    "folder": folder,
    "video": video,
}
"""KIND -> reader(source, vocabulary, **options), each yielding LabelledFrames in time order."""
