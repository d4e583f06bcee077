"""The paper's baselines, as decisions the replay (and a live driver) can run: ROS-free and
clock-free like the engine. docs/evaluation.md says where each comes from and every
assumption made.

- **Distributed VLM** (Li et al. 2025, "Distributed VLMs: Efficient Vision-Language
  Processing through Cloud-Edge Collaboration", PerConAI'25): the LVLM's vision encoder
  runs on the edge and its features, not the image, are uploaded; the cloud's LLM fuses
  them with the text. No edge answer: a frame's answer is the LVLM's, after the edge
  encoder, the features' upload and the cloud's LLM. :func:`feature_upload_seconds`.
- **ADAS** (Hu et al. 2024b, as SpotVLM describes it: offload to the cloud "only when
  necessary", weighing latency and QoS). Its paper could not be found, so this is a
  stated proxy: upload a frame only while the cloud is predicted to answer within the
  deadline (an exponentially weighted mean of the observed round trips), else answer on
  board; a probe every ``probe_s`` keeps the prediction current. No context transfer.
  :class:`LatencyAwareOffload`.
- **LAECIPS** (Hu et al. 2024, arXiv 2404.10498, "Large Vision Model Assisted Adaptive
  Edge-Cloud Collaboration"): the edge model answers first; an input whose edge
  confidence is below a threshold is "hard" and uploaded, and the cloud's answer replaces
  the edge's for it (when it comes in time). Its online retraining of the edge model from
  the cloud's answers is not reproduced (it would fine-tune the SVLM). :func:`is_hard`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotvlm_ros.core.types import Stamp, seconds_between

LAECIPS_THRESHOLD = 0.5
"""The confidence below which LAECIPS asks the cloud (the SVLM's answer probability per
token: 0.5 is an even chance per token)."""

ADAS_PROBE_S = 5.0
"""While the cloud is predicted late, the ADAS proxy still sends one frame this often."""

OFFLOADED = "offloaded to the cloud (ADAS): the cloud answers this frame, not the SVLM"


@dataclass(frozen=True)
class DistributedVlmConfig:
    """What a Distributed VLM frame costs besides the cloud's LLM (assumptions, stated)."""

    encoder_s: float = 0.35  # the LVLM's vision encoder (~0.67 B parameters) on the edge
    hidden: int = 8192  # the LLM's width: Qwen2.5-VL-72B's merged visual tokens are 8192-wide
    bytes_per_value: int = 2  # bfloat16, neither pruned nor quantised (as the paper)
    link_mbit_s: float = 100.0  # the uplink
    max_pixels: int = 448 * 448  # the frame size the edge encoder takes
    patch: int = 28  # pixels per merged visual token side (14 px patches, 2 x 2 merge)

    def feature_bytes(self, width: int, height: int) -> int:
        """The size of one frame's visual features."""
        scale = min(1.0, math.sqrt(self.max_pixels / max(1, width * height)))
        columns = max(1, round(width * scale / self.patch))
        rows = max(1, round(height * scale / self.patch))
        return columns * rows * self.hidden * self.bytes_per_value

    def edge_seconds(self, width: int, height: int) -> float:
        """Edge encoder plus the features' upload, before the cloud's LLM starts."""
        upload = self.feature_bytes(width, height) * 8 / (self.link_mbit_s * 1e6)
        return self.encoder_s + upload


@dataclass
class LatencyAwareOffload:
    """The ADAS proxy: offload while the cloud is predicted to answer within the deadline.

    The prediction is an exponentially weighted mean of the observed round trips (weight
    ``alpha`` for the newest); with none observed yet, the cloud is tried. While the
    prediction is over the deadline, one frame every ``probe_s`` is still sent, so that a
    cloud that became fast again is noticed."""

    deadline_s: float
    alpha: float = 0.3
    probe_s: float = ADAS_PROBE_S
    predicted_s: float | None = None
    last_sent: Stamp | None = None

    def decide(self, now: Stamp) -> bool:
        """Whether to upload the frame arriving at ``now`` (recorded as sent if so)."""
        fast = self.predicted_s is None or self.predicted_s <= self.deadline_s
        probe = self.last_sent is None or seconds_between(self.last_sent, now) >= self.probe_s
        if fast or probe:
            self.last_sent = now
            return True
        return False

    def observe(self, round_trip_s: float) -> None:
        """A request's round trip, measured when its answer came (a request that failed
        counts as at least twice the deadline: a cloud that fails is not one in time)."""
        if self.predicted_s is None:
            self.predicted_s = round_trip_s
        else:
            self.predicted_s = self.alpha * round_trip_s + (1 - self.alpha) * self.predicted_s


def is_hard(confidence: float, threshold: float) -> bool:
    """LAECIPS's gate: an input whose edge confidence is below ``threshold`` goes to the
    cloud (the SVLM's confidence: the geometric mean of its answer's token probabilities)."""
    return confidence < threshold
