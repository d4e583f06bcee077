"""Geometry of visual focus: the SVLM's resized image, its visual-token grid, and ROI -> tokens.

Qwen2.5-VL cuts the resized image into 14-px patches and merges 2x2 patches into one
visual token, so one token covers a 28x28-px cell of the resized image. Tokens are numbered
row-major over that merged grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spotvlm_ros.core.types import Box, Roi


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """The (height, width) Qwen2.5-VL resizes an image to: multiples of ``factor`` whose
    product lies in [min_pixels, max_pixels], keeping the aspect ratio as well as it can."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds 200")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class TokenGrid:
    """The merged visual-token grid of one image.

    Attributes:
        image_width, image_height: the original frame's size (px).
        resized_width, resized_height: the size the model sees (px, multiples of the cell).
        patch_size: the vision encoder's patch (14 for Qwen2.5-VL).
        merge_size: patches merged per side into one token (2 for Qwen2.5-VL).
    """

    image_width: int
    image_height: int
    resized_width: int
    resized_height: int
    patch_size: int = 14
    merge_size: int = 2

    def __post_init__(self) -> None:
        cell = self.cell
        if min(self.image_width, self.image_height) <= 0:
            raise ValueError(
                f"image size must be positive, got {self.image_width}x{self.image_height}"
            )
        if (
            self.resized_width % cell
            or self.resized_height % cell
            or min(self.resized_width, self.resized_height) <= 0
        ):
            raise ValueError(
                f"resized size {self.resized_width}x{self.resized_height} is not a positive "
                f"multiple of the {cell}-px token cell"
            )

    @property
    def cell(self) -> int:
        """Side of one token's cell in resized pixels."""
        return self.patch_size * self.merge_size

    @property
    def cols(self) -> int:
        """Tokens per row."""
        return self.resized_width // self.cell

    @property
    def rows(self) -> int:
        """Token rows."""
        return self.resized_height // self.cell

    @property
    def size(self) -> int:
        """Number of visual tokens of the full image."""
        return self.rows * self.cols

    def box_to_resized(self, box: Box) -> Box:
        """``box`` (original-frame pixels) in resized-image pixels."""
        return box.scaled(
            self.resized_width / self.image_width, self.resized_height / self.image_height
        )

    def token_indices(self, box: Box) -> tuple[int, ...]:
        """Row-major indices of the tokens whose cells overlap ``box`` (original pixels).

        A box that lies outside the image, or touches cells only along an edge, yields no
        index; every index is in ``range(self.size)``.
        """
        r = self.box_to_resized(box).clipped(self.resized_width, self.resized_height)
        if r.width <= 0 or r.height <= 0:
            return ()
        c0 = min(int(r.x1 // self.cell), self.cols - 1)
        r0 = min(int(r.y1 // self.cell), self.rows - 1)
        c1 = min(max(math.ceil(r.x2 / self.cell), c0 + 1), self.cols)
        r1 = min(max(math.ceil(r.y2 / self.cell), r0 + 1), self.rows)
        return tuple(row * self.cols + col for row in range(r0, r1) for col in range(c0, c1))


def largest_per_label(rois: Iterable[Roi]) -> tuple[Roi, ...]:
    """For each label the ROI with the largest area (first one on ties), in label order."""
    best: dict[str, Roi] = {}
    for roi in rois:
        current = best.get(roi.label)
        if current is None or roi.box.area > current.box.area:
            best[roi.label] = roi
    return tuple(best[label] for label in sorted(best))


def focus_token_indices(rois: Sequence[Roi], grid: TokenGrid) -> tuple[int, ...]:
    """GGVR's selection: sorted indices of the tokens overlapping the largest ROI per label."""
    selected: set[int] = set()
    for roi in largest_per_label(rois):
        selected.update(grid.token_indices(roi.box))
    return tuple(sorted(selected))


def roi_token_groups(rois: Sequence[Roi], grid: TokenGrid) -> dict[str, tuple[int, ...]]:
    """GTVR's groups: per label, the token indices of its largest ROI (if it has any)."""
    groups = {roi.label: grid.token_indices(roi.box) for roi in largest_per_label(rois)}
    return {label: idx for label, idx in groups.items() if idx}
