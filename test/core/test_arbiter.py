"""Real-time arbitration against the deadline, batch and live."""

from __future__ import annotations

import pytest

from spotvlm_ros.core.arbiter import Arbiter, Candidate, LiveArbiter
from spotvlm_ros.core.types import Source, stamp_from_seconds

S = stamp_from_seconds
T = S(100.0)


def svlm(at: float, answer: str = "svlm") -> Candidate:
    return Candidate(Source.SVLM, answer, frozenset({answer}), S(at))


def lvlm(at: float, answer: str = "lvlm") -> Candidate:
    return Candidate(Source.LVLM, answer, frozenset({answer}), S(at))


def test_lvlm_in_time_wins() -> None:
    d = Arbiter(1.0).decide(T, [svlm(100.3), lvlm(100.9)])
    assert (d.source, d.answer, d.deadline_met) == (Source.LVLM, "lvlm", True)
    assert d.latency == pytest.approx(0.9)


def test_late_lvlm_loses_to_svlm_in_time() -> None:
    d = Arbiter(1.0).decide(T, [svlm(100.3), lvlm(102.0)])
    assert d.source is Source.SVLM
    assert d.latency == pytest.approx(0.3)


def test_exactly_at_the_deadline_is_in_time() -> None:
    assert Arbiter(1.0).decide(T, [svlm(101.0)]).source is Source.SVLM


def test_nothing_in_time_is_an_invalid_empty_answer() -> None:
    d = Arbiter(1.0).decide(T, [svlm(101.2), lvlm(103.0)])
    assert (d.source, d.answer, d.labels, d.deadline_met) == (Source.NONE, "", frozenset(), False)


def test_no_answers_at_all_is_invalid() -> None:
    assert Arbiter(1.0).decide(T, []).source is Source.NONE


def test_the_first_of_two_in_time_answers_of_a_source_wins() -> None:
    d = Arbiter(1.0).decide(T, [svlm(100.8, "b"), svlm(100.2, "a")])
    assert d.answer == "a"


def test_bad_deadline_is_refused() -> None:
    with pytest.raises(ValueError, match="deadline"):
        Arbiter(0.0)


def test_live_lvlm_in_time_decides_at_once() -> None:
    live = LiveArbiter(Arbiter(1.0))
    live.register(T)
    live.expect_lvlm(T)
    assert live.offer(T, svlm(100.2)) is None  # an LVLM answer may still come
    decision = live.offer(T, lvlm(100.6))
    assert decision is not None and decision.source is Source.LVLM
    assert live.pending() == 0


def test_live_svlm_decides_at_once_when_no_lvlm_is_expected() -> None:
    live = LiveArbiter(Arbiter(1.0))
    live.register(T)
    decision = live.offer(T, svlm(100.2))
    assert decision is not None and decision.source is Source.SVLM


def test_live_deadline_passes_with_svlm_only() -> None:
    live = LiveArbiter(Arbiter(1.0))
    live.register(T)
    live.expect_lvlm(T)
    live.offer(T, svlm(100.2))
    assert live.due(S(100.9)) == []
    [decision] = live.due(S(101.01))
    assert decision.source is Source.SVLM


def test_live_every_frame_gets_exactly_one_decision() -> None:
    live = LiveArbiter(Arbiter(1.0))
    decisions = []
    for i in range(10):
        t = S(100.0 + 0.5 * i)
        decisions += live.register(t)
        if i % 3:
            found = live.offer(t, svlm(100.0 + 0.5 * i + 0.2))
            decisions += [found] if found else []
        decisions += live.due(t)
    decisions += live.due(S(200.0))
    assert sorted(d.stamp for d in decisions) == [S(100.0 + 0.5 * i) for i in range(10)]
    assert sum(d.source is Source.NONE for d in decisions) == 4  # frames 0, 3, 6, 9


def test_live_late_results_are_counted() -> None:
    live = LiveArbiter(Arbiter(1.0))
    live.register(T)
    live.due(S(105.0))
    assert live.offer(T, lvlm(105.0)) is None
    assert live.late == 1


def test_live_results_before_their_frame_are_held_until_it_is_registered() -> None:
    live = LiveArbiter(Arbiter(1.0))
    assert live.offer(T, svlm(100.2)) is None  # the result overtook its frame
    [decision] = live.register(T)
    assert decision.source is Source.SVLM
    # an upload notice that overtakes the frame makes the SVLM answer wait for the LVLM
    t2 = S(101.0)
    live.expect_lvlm(t2)
    live.offer(t2, svlm(101.2))
    assert live.register(t2) == []
    assert live.offer(t2, lvlm(101.8)).source is Source.LVLM  # type: ignore[union-attr]


def test_live_early_buffer_is_bounded_and_counts_what_it_forgets() -> None:
    live = LiveArbiter(Arbiter(1.0), max_pending=2)
    for i in range(5):
        live.offer(S(float(i)), svlm(float(i)))
    assert live.unknown == 3


def test_live_pending_is_bounded() -> None:
    live = LiveArbiter(Arbiter(1.0), max_pending=3)
    forced = []
    for i in range(5):
        forced += live.register(S(float(i)))
    assert live.pending() == 3
    assert [d.stamp for d in forced] == [S(0.0), S(1.0)]


def test_live_failed_upload_settles_a_frame_with_an_in_time_svlm_answer() -> None:
    live = LiveArbiter(Arbiter(1.0))
    live.register(T)
    live.expect_lvlm(T)
    assert live.offer(T, svlm(100.2)) is None
    decision = live.expect_lvlm(T, False)
    assert decision is not None
    assert decision.source is Source.SVLM
    assert live.pending() == 0


def test_live_next_due_is_the_oldest_pending_deadline() -> None:
    live = LiveArbiter(Arbiter(1.0))
    assert live.next_due() is None
    live.register(S(101.0))
    live.register(S(100.5))
    assert live.next_due() == S(101.5)
    # nothing is decided at next_due itself, the oldest frame is just after it
    assert live.due(S(101.5)) == []
    [decision] = live.due(S(101.5) + 1)
    assert decision.stamp == S(100.5)
    assert live.next_due() == S(102.0)
    live.due(S(103.0))
    assert live.next_due() is None
