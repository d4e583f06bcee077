"""Drawing of the overlay image: the frame, the ROIs used (label and age) and the answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spotvlm_ros.core.types import Roi, Source

ROI_COLOUR = (255, 200, 0)  # RGB: amber boxes
SOURCE_COLOUR = {
    Source.LVLM: (80, 200, 255),
    Source.SVLM: (120, 255, 120),
    Source.NONE: (255, 80, 80),
}
SOURCE_NAME = {
    Source.LVLM: "cloud (LVLM)",
    Source.SVLM: "on-board (SVLM)",
    Source.NONE: "none in time",
}


def draw_overlay(
    rgb: np.ndarray,
    rois: Sequence[Roi],
    roi_age_s: float | None,
    answer: str,
    source: Source,
    latency_s: float,
) -> np.ndarray:
    """A copy of ``rgb`` with the ROIs (label and age) and a banner with the final answer."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    height, width = out.shape[:2]
    thickness = max(2, round(min(height, width) / 240))
    scale = max(0.4, min(height, width) / 720)
    for roi in rois:
        x1, y1 = int(roi.box.x1), int(roi.box.y1)
        x2, y2 = int(roi.box.x2) - 1, int(roi.box.y2) - 1
        cv2.rectangle(out, (x1, y1), (x2, y2), ROI_COLOUR, thickness)
        tag = roi.label if roi_age_s is None else f"{roi.label} {roi_age_s:.1f}s"
        cv2.putText(
            out,
            tag,
            (x1 + 2, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 * scale,
            ROI_COLOUR,
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    banner = max(24, int(34 * scale))
    cv2.rectangle(out, (0, 0), (width - 1, banner), (0, 0, 0), -1)
    text = f"[{SOURCE_NAME[source]} {latency_s:.2f}s] {answer or '(no answer)'}"
    cv2.putText(
        out,
        text[:120],
        (6, banner - 8),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6 * scale,
        SOURCE_COLOUR[source],
        max(1, thickness // 2),
        cv2.LINE_AA,
    )
    return out
