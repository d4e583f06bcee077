"""Bookkeeping of an evaluation run, shared by the live evaluator node and the offline
evaluator, so that both report identical numbers for the same events.

Per frame it matches, by stamp, the ground truth with the final answer and with the SVLM's
and the LVLM's own results, and keeps running scores per source, deadline misses,
context replacements, dropped frames and visual tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotvlm_ros.core.metrics import RunningMultiLabelScores
from spotvlm_ros.core.types import Source, Stamp

SOURCES = ("final", "svlm", "lvlm")

Correct = Callable[[frozenset[str], "frozenset[str] | None"], bool]
"""A task's rule: is this prediction (None: invalid frame) correct for this truth?"""


def same_set(truth: frozenset[str], predicted: frozenset[str] | None) -> bool:
    """The default rule: the predicted set is the true set (0-1 exact match)."""
    return predicted is not None and predicted == truth


@dataclass
class EvaluationLog:
    """Events in, report out. Each (source, frame) is scored once, whatever the order."""

    vocabulary: Sequence[str]
    correct: Correct = same_set  # the task's rule (spotvlm_ros.core.task.Task.correct)
    truths: dict[Stamp, frozenset[str]] = field(default_factory=dict)
    predictions: dict[str, dict[Stamp, frozenset[str] | None]] = field(
        default_factory=lambda: {s: {} for s in SOURCES}
    )
    final_sources: dict[Stamp, Source] = field(default_factory=dict)
    final_latencies: list[float] = field(default_factory=list)
    svlm_dropped: set[Stamp] = field(default_factory=set)  # frames, each counted once
    svlm_errors: set[Stamp] = field(default_factory=set)
    lvlm_failures: set[Stamp] = field(default_factory=set)
    visual_tokens: list[tuple[int, int]] = field(default_factory=list)
    replaced_stamps: set[Stamp] = field(default_factory=set)
    _scores: dict[str, RunningMultiLabelScores] = field(default_factory=dict)
    _scored: dict[str, set[Stamp]] = field(default_factory=dict)
    _correct: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._scores = {s: RunningMultiLabelScores(self.vocabulary) for s in SOURCES}
        self._scored = {s: set() for s in SOURCES}
        self._correct = dict.fromkeys(SOURCES, 0)

    def truth(self, stamp: Stamp, labels: Iterable[str]) -> None:
        """The ground truth of the frame at ``stamp``."""
        if stamp in self.truths:
            return
        self.truths[stamp] = frozenset(labels)
        for source in SOURCES:
            self._score(source, stamp)

    def final(self, stamp: Stamp, source: Source, labels: Iterable[str], latency: float) -> None:
        """The final answer of a frame (source NONE: invalid, scored as empty)."""
        if stamp in self.final_sources:
            return
        self.final_sources[stamp] = source
        if source is not Source.NONE:
            self.final_latencies.append(latency)
        self._predict("final", stamp, None if source is Source.NONE else frozenset(labels))

    def svlm(
        self,
        stamp: Stamp,
        labels: Iterable[str] | None,
        *,
        tokens_used: int = 0,
        tokens_full: int = 0,
        dropped: bool = False,
        lvlm_history: Iterable[Stamp] = (),
    ) -> None:
        """An SVLM result: labels (None when it failed), visual tokens, and the stamps of the
        LVLM turns its prompt held (each counts once as a context replacement). A frame's
        second SVLM result (a redelivered message) changes nothing."""
        if stamp in self.svlm_dropped or stamp in self.svlm_errors:
            return
        if stamp in self.predictions["svlm"]:
            return
        self.replaced_stamps.update(lvlm_history)
        if dropped:
            self.svlm_dropped.add(stamp)
            return
        if labels is None:
            self.svlm_errors.add(stamp)
            return
        if tokens_full:
            self.visual_tokens.append((tokens_used, tokens_full))
        self._predict("svlm", stamp, frozenset(labels))

    def lvlm(self, stamp: Stamp, labels: Iterable[str] | None) -> None:
        """An LVLM result: labels, or None when the request failed (once per frame)."""
        if labels is None:
            self.lvlm_failures.add(stamp)
            return
        self._predict("lvlm", stamp, frozenset(labels))

    def _predict(self, source: str, stamp: Stamp, labels: frozenset[str] | None) -> None:
        if stamp in self.predictions[source]:
            return
        self.predictions[source][stamp] = labels
        self._score(source, stamp)

    def _score(self, source: str, stamp: Stamp) -> None:
        if stamp in self._scored[source] or stamp not in self.truths:
            return
        if stamp not in self.predictions[source]:
            return
        self._scored[source].add(stamp)
        predicted = self.predictions[source][stamp]
        self._scores[source].update(self.truths[stamp], predicted)
        self._correct[source] += self.correct(self.truths[stamp], predicted)

    def report(self) -> dict[str, Any]:
        """Every figure of the run, JSON-serialisable."""
        per_source = {}
        for source in SOURCES:
            s = self._scores[source].scores()
            per_source[source] = {
                "frames_scored": s.frames,
                "micro_f1": s.micro_f1,
                "macro_f1": s.macro_f1,
                "exact_match": s.exact_match,
                "accuracy": self._correct[source] / s.frames if s.frames else 0.0,
            }
        by_source = {src.name.lower(): 0 for src in Source}
        for src in self.final_sources.values():
            by_source[src.name.lower()] += 1
        used = [u for u, _ in self.visual_tokens]
        full = [f for _, f in self.visual_tokens]
        return {
            "frames_with_truth": len(self.truths),
            "final_answers": len(self.final_sources),
            "answers_by_source": by_source,
            "deadline_misses": by_source["none"],
            "mean_final_latency_s": (
                sum(self.final_latencies) / len(self.final_latencies)
                if self.final_latencies
                else None
            ),
            "context_replacements": len(self.replaced_stamps),
            "svlm_dropped": len(self.svlm_dropped),
            "svlm_errors": len(self.svlm_errors),
            "lvlm_failures": len(self.lvlm_failures),
            "mean_visual_tokens": sum(used) / len(used) if used else None,
            "mean_visual_tokens_full": sum(full) / len(full) if full else None,
            "scores": per_source,
        }

    def markdown(self, title: str = "spotvlm evaluation", note: str = "") -> str:
        """The report as Markdown."""
        r = self.report()
        lines = [f"# {title}", ""]
        if note:
            lines += [note, ""]
        lines += [
            f"- frames with ground truth: {r['frames_with_truth']}",
            f"- final answers: {r['final_answers']} ("
            + ", ".join(f"{k}: {v}" for k, v in r["answers_by_source"].items())
            + ")",
            f"- deadline misses (invalid frames): {r['deadline_misses']}",
            f"- context replacements (LVLM turns in SVLM prompts): {r['context_replacements']}",
            f"- SVLM dropped / errors: {r['svlm_dropped']} / {r['svlm_errors']}; "
            f"LVLM failures: {r['lvlm_failures']}",
            "- mean visual tokens: "
            + (
                f"{r['mean_visual_tokens']:.1f} of {r['mean_visual_tokens_full']:.1f}"
                if r["mean_visual_tokens"] is not None
                else "n/a"
            ),
            "",
            "| source | frames scored | Micro-F1 | Macro-F1 | exact match | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for source, s in r["scores"].items():
            lines.append(
                f"| {source} | {s['frames_scored']} | {s['micro_f1']:.3f} | {s['macro_f1']:.3f} "
                f"| {s['exact_match']:.3f} | {s['accuracy']:.3f} |"
            )
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        """The report as JSON text."""
        return json.dumps(self.report(), indent=2, sort_keys=True)
