"""Scores of multi-label (object recognition) and single-label (gesture, caption) tasks.

Definitions (the same as scikit-learn's ``f1_score`` on indicator matrices over the
vocabulary, ``zero_division=0``):

- Micro-F1 = 2 TP / (2 TP + FP + FN) with TP, FP, FN summed over all classes and frames;
  0 when the denominator is 0 (nothing in truth or prediction).
- Macro-F1 = the mean of the per-class F1 over the classes that occur in the ground truth
  or the predictions of the evaluated frames. A class absent from both has an undefined
  F1 and is left out of the mean rather than counted as 0 or 1 (equivalently
  ``f1_score(..., average="macro", labels=<classes present>)``); 0 when no class occurs.
- Exact match = the share of frames whose predicted set equals the true set.
- An invalid frame (no answer within the deadline) counts as an empty prediction.
- Labels outside the vocabulary are ignored (map answers with the task's Vocabulary first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MultiLabelScores:
    """Aggregate scores of a set of frames."""

    frames: int
    micro_f1: float
    macro_f1: float
    exact_match: float
    per_class_f1: dict[str, float]


@dataclass
class _ClassCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 0.0


@dataclass
class RunningMultiLabelScores:
    """Scores updated frame by frame (live evaluation); :func:`multilabel_scores` is the
    batch form and gives identical numbers."""

    vocabulary: Sequence[str]
    frames: int = 0
    exact: int = 0
    _counts: dict[str, _ClassCounts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._counts = {label: _ClassCounts() for label in self.vocabulary}

    def update(self, truth: Iterable[str], prediction: Iterable[str] | None) -> None:
        """Add one frame; ``prediction`` None means the frame was invalid (empty answer)."""
        t = {x for x in truth if x in self._counts}
        p = {x for x in (prediction or ()) if x in self._counts}
        self.frames += 1
        self.exact += t == p
        for label in t & p:
            self._counts[label].tp += 1
        for label in p - t:
            self._counts[label].fp += 1
        for label in t - p:
            self._counts[label].fn += 1

    def scores(self) -> MultiLabelScores:
        """The scores of the frames added so far."""
        present = {k: c for k, c in self._counts.items() if c.tp + c.fp + c.fn}
        total = _ClassCounts(
            sum(c.tp for c in present.values()),
            sum(c.fp for c in present.values()),
            sum(c.fn for c in present.values()),
        )
        per_class = {k: c.f1() for k, c in present.items()}
        macro = sum(per_class.values()) / len(per_class) if per_class else 0.0
        exact = self.exact / self.frames if self.frames else 0.0
        return MultiLabelScores(self.frames, total.f1(), macro, exact, per_class)


def multilabel_scores(
    truths: Sequence[Iterable[str]],
    predictions: Sequence[Iterable[str] | None],
    vocabulary: Sequence[str],
) -> MultiLabelScores:
    """Scores of ``predictions`` against ``truths`` (one label set per frame)."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions")
    running = RunningMultiLabelScores(vocabulary)
    for truth, prediction in zip(truths, predictions, strict=True):
        running.update(truth, prediction)
    return running.scores()


def accuracy(truths: Sequence[str], predictions: Sequence[str | None]) -> float:
    """Single-label accuracy; an invalid frame (None) is wrong. 0 for no frames."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions")
    if not truths:
        return 0.0
    hits = sum(p is not None and p == t for t, p in zip(truths, predictions, strict=True))
    return hits / len(truths)
