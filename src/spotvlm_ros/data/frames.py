"""What every dataset reader yields, and what it raises: the data package's shared types.

No reader is imported here (the readers import this module; ``readers.py`` imports the
readers), so the package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotvlm_ros.core.types import Roi, Stamp
from spotvlm_ros.imaging import swap_red_blue

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(Exception):
    """A dataset path is missing or not in the expected format."""


@dataclass(frozen=True)
class LabelledFrame:
    """One frame of a sequence."""

    name: str
    stamp: Stamp  # ns, relative to the sequence start (0 for the first frame)
    load: Callable[[], np.ndarray]  # -> (H, W, 3) RGB uint8
    labels: frozenset[str] | None  # None: unlabelled
    boxes: tuple[Roi, ...] = ()
    camera: str = ""  # the camera channel (nuScenes CAM_FRONT, ...) where a source has several


def read_rgb(path: Path) -> Callable[[], np.ndarray]:
    """A loader of the RGB image at ``path`` (read when called)."""

    def load() -> np.ndarray:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read the image {path}")
        return swap_red_blue(image)

    return load
