"""Value types shared by the core: stamps, sources, boxes and ROIs."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

Stamp = int
"""A point in time in integer nanoseconds (a ROS stamp as ``sec * 10**9 + nanosec``).

Stamps are integers so that results can be matched to their source frame exactly.
"""

NS_PER_S = 1_000_000_000


def seconds_between(earlier: Stamp, later: Stamp) -> float:
    """``later - earlier`` in seconds."""
    return (later - earlier) / NS_PER_S


def stamp_from_seconds(seconds: float) -> Stamp:
    """A stamp from a time in seconds (rounded to the nearest nanosecond)."""
    return round(seconds * NS_PER_S)


class Source(enum.IntEnum):
    """Who produced an answer; the values equal the constants of the spotvlm_msgs messages."""

    NONE = 0
    SVLM = 1
    LVLM = 2


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: ``x1 <= x2`` and ``y1 <= y2`` (x right, y down)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_corners(cls, x1: float, y1: float, x2: float, y2: float) -> Box:
        """A box from two opposite corners given in any order."""
        return cls(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    @property
    def width(self) -> float:
        """Width in pixels."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """Height in pixels."""
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        """Area in square pixels."""
        return self.width * self.height

    def scaled(self, sx: float, sy: float) -> Box:
        """The box with x scaled by ``sx`` and y by ``sy``."""
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def clipped(self, width: float, height: float) -> Box:
        """The part of the box inside an image of ``width`` x ``height`` pixels."""
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def is_degenerate(self, min_size: float = 1.0) -> bool:
        """Whether the box is narrower or lower than ``min_size`` pixels."""
        return self.width < min_size or self.height < min_size


@dataclass(frozen=True)
class Roi:
    """A labelled region of interest in the original frame's pixels."""

    label: str
    box: Box
    score: float = 1.0
    track_id: int | None = None


def keep_best_rois(rois: Sequence[Roi], limit: int) -> tuple[Roi, ...]:
    """At most ``limit`` ROIs: the highest-scoring, in their original order."""
    if len(rois) <= limit:
        return tuple(rois)
    best = sorted(range(len(rois)), key=lambda i: -rois[i].score)[:limit]
    return tuple(rois[i] for i in sorted(best))
