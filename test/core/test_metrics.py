"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.metrics import RunningMultiLabelScores, accuracy, multilabel_scores

VOCAB = ("car", "truck", "bus", "pedestrian")


def test_hand_computed_example() -> None:
    truths = [{"car", "truck"}, {"pedestrian"}, set()]
    preds = [{"car"}, {"pedestrian", "bus"}, None]  # the last frame was invalid
    s = multilabel_scores(truths, preds, VOCAB)
    # TP = car, pedestrian = 2; FP = bus = 1; FN = truck = 1 -> micro = 4 / 6
    assert s.micro_f1 == pytest.approx(4 / 6)
    # present classes: car 1.0, truck 0.0, bus 0.0, pedestrian 1.0 -> macro 0.5
    assert s.macro_f1 == pytest.approx(0.5)
    assert s.exact_match == pytest.approx(1 / 3)  # the empty frame with an invalid answer
    assert s.per_class_f1 == {"car": 1.0, "truck": 0.0, "bus": 0.0, "pedestrian": 1.0}


def test_absent_classes_are_left_out_of_macro() -> None:
    s = multilabel_scores([{"car"}], [{"car"}], VOCAB)
    assert s.macro_f1 == 1.0


def test_nothing_anywhere_scores_zero_f1_and_full_exact_match() -> None:
    s = multilabel_scores([set(), set()], [set(), None], VOCAB)
    assert (s.micro_f1, s.macro_f1, s.exact_match) == (0.0, 0.0, 1.0)


def test_labels_outside_the_vocabulary_are_ignored() -> None:
    s = multilabel_scores([{"car"}], [{"car", "dragon"}], VOCAB)
    assert s.micro_f1 == 1.0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 truths but 1 predictions"):
        multilabel_scores([set(), set()], [set()], VOCAB)


def test_accuracy() -> None:
    assert accuracy(["a", "b", "c"], ["a", None, "x"]) == pytest.approx(1 / 3)
    assert accuracy([], []) == 0.0


label_sets = st.frozensets(st.sampled_from(VOCAB))


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(label_sets, st.one_of(st.none(), label_sets)), min_size=1, max_size=30)
)
def test_matches_scikit_learn(pairs: list[tuple[frozenset[str], frozenset[str] | None]]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    truths = [t for t, _ in pairs]
    preds = [p for _, p in pairs]
    ours = multilabel_scores(truths, preds, VOCAB)

    y_true = np.array([[label in t for label in VOCAB] for t in truths], dtype=int)
    y_pred = np.array([[label in (p or ()) for label in VOCAB] for p in preds], dtype=int)
    present = [i for i in range(len(VOCAB)) if y_true[:, i].any() or y_pred[:, i].any()]
    micro = metrics.f1_score(y_true, y_pred, average="micro", zero_division=0)
    assert ours.micro_f1 == pytest.approx(micro)
    if present:
        macro = metrics.f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)
        assert ours.macro_f1 == pytest.approx(macro)
    assert ours.exact_match == pytest.approx(metrics.accuracy_score(y_true, y_pred))


def test_running_and_batch_give_identical_numbers() -> None:
    rng = np.random.default_rng(0)
    truths = [frozenset(np.array(VOCAB)[rng.random(4) < 0.4]) for _ in range(50)]
    preds = [frozenset(np.array(VOCAB)[rng.random(4) < 0.4]) for _ in range(50)]
    running = RunningMultiLabelScores(VOCAB)
    for t, p in zip(truths, preds, strict=True):
        running.update(t, p)
    assert running.scores() == multilabel_scores(truths, preds, VOCAB)
