"""Context replacement (CRM): the rules of design.md and their edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.context import ContextConfig, ContextReplacement, ReplacementOutcome
from spotvlm_ros.core.types import Source, stamp_from_seconds

S = stamp_from_seconds  # seconds -> stamp
Q = "Which objects are in the image?"


def history(k: int = 2, delta: float = 10.0) -> ContextReplacement:
    return ContextReplacement(ContextConfig(max_entries=k, delta=delta))


def test_svlm_turns_keep_the_last_k_frames_oldest_first() -> None:
    h = history(k=2)
    for t in (1.0, 2.0, 3.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    assert [e.answer for e in h.entries()] == ["svlm@2.0", "svlm@3.0"]
    assert all(e.source is Source.SVLM for e in h.entries())


def test_lvlm_answer_within_delta_replaces_the_svlm_answer_and_is_oldest() -> None:
    h = history(k=3)
    for t in (1.0, 2.0, 3.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    outcome = h.replace(S(2.0), "cloud@2", arrival=S(5.0))
    assert outcome is ReplacementOutcome.REPLACED
    entries = h.entries()
    assert [(e.answer, e.source) for e in entries] == [
        ("cloud@2", Source.LVLM),
        ("svlm@3.0", Source.SVLM),
    ]
    assert entries[0].question == Q  # taken over from the replaced turn


def test_lvlm_turn_takes_one_of_the_k_places() -> None:
    h = history(k=2)
    for t in (1.0, 2.0, 3.0, 4.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    h.replace(S(2.5), "cloud@2.5", arrival=S(4.5))
    assert [e.answer for e in h.entries()] == ["cloud@2.5", "svlm@4.0"]


def test_lvlm_answer_older_than_every_kept_entry_still_becomes_the_oldest() -> None:
    h = history(k=2, delta=10.0)
    for t in (5.0, 6.0, 7.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    outcome = h.replace(S(1.0), "cloud@1", arrival=S(7.5))
    assert outcome is ReplacementOutcome.INSERTED
    assert [e.answer for e in h.entries()] == ["cloud@1", "svlm@7.0"]


def test_lvlm_answer_later_than_delta_is_ignored_and_counted() -> None:
    h = history(delta=3.0)
    h.add_svlm(S(1.0), Q, "svlm@1")
    assert h.replace(S(1.0), "cloud@1", arrival=S(4.0001)) is ReplacementOutcome.STALE
    assert h.counters.stale == 1
    assert [e.source for e in h.entries()] == [Source.SVLM]
    # exactly delta is still in time
    assert h.replace(S(1.0), "cloud@1", arrival=S(4.0)) is ReplacementOutcome.REPLACED


def test_duplicate_arrival_keeps_the_first_answer() -> None:
    h = history()
    h.add_svlm(S(1.0), Q, "svlm@1")
    h.replace(S(1.0), "first", arrival=S(2.0))
    assert h.replace(S(1.0), "second", arrival=S(2.5)) is ReplacementOutcome.DUPLICATE
    assert h.entries()[0].answer == "first"
    assert h.counters.duplicate == 1


def test_out_of_order_arrival_never_displaces_a_newer_frames_answer() -> None:
    h = history(k=3)
    for t in (1.0, 2.0, 3.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    h.replace(S(2.0), "cloud@2", arrival=S(3.5))
    assert h.replace(S(1.0), "cloud@1", arrival=S(3.6)) is ReplacementOutcome.SUPERSEDED
    assert h.entries()[0].answer == "cloud@2"
    # the same arrivals in the other order end in the same history
    g = history(k=3)
    for t in (1.0, 2.0, 3.0):
        g.add_svlm(S(t), Q, f"svlm@{t}")
    g.replace(S(1.0), "cloud@1", arrival=S(3.6))
    g.replace(S(2.0), "cloud@2", arrival=S(3.5))
    assert g.entries() == h.entries()


def test_svlm_turns_at_or_before_the_cloud_frame_are_superseded() -> None:
    h = history(k=3)
    for t in (1.0, 2.0, 3.0):
        h.add_svlm(S(t), Q, f"svlm@{t}")
    h.replace(S(2.0), "cloud@2", arrival=S(3.0))
    assert "svlm@1.0" not in [e.answer for e in h.entries()]


def test_a_late_svlm_answer_does_not_override_the_cloud_turn() -> None:
    h = history(k=2)
    h.replace(S(1.0), "cloud@1", arrival=S(1.5))
    h.add_svlm(S(1.0), Q, "svlm@1")
    assert [e.answer for e in h.entries()] == ["cloud@1"]


def test_entries_before_a_frame_hide_newer_turns_and_an_old_cloud_turn() -> None:
    h = history(k=2, delta=3.0)
    h.add_svlm(S(1.0), Q, "svlm@1")
    h.replace(S(1.0), "cloud@1", arrival=S(2.0))
    h.add_svlm(S(2.0), Q, "svlm@2")
    assert [e.answer for e in h.entries(before=S(2.0))] == ["cloud@1"]
    assert [e.answer for e in h.entries(before=S(3.0))] == ["cloud@1", "svlm@2"]
    # 5 s after its frame the cloud turn is older than delta and no longer shown
    assert [e.answer for e in h.entries(before=S(6.0))] == ["svlm@2"]


def test_arrival_before_its_frame_is_used_and_counted() -> None:
    h = history()
    assert h.replace(S(5.0), "cloud", arrival=S(4.9)) is ReplacementOutcome.INSERTED
    assert h.counters.negative_delay == 1


def test_k_equal_one_shows_only_the_cloud_turn_when_there_is_one() -> None:
    h = history(k=1)
    h.add_svlm(S(1.0), Q, "svlm@1")
    h.add_svlm(S(2.0), Q, "svlm@2")
    h.replace(S(1.5), "cloud", arrival=S(2.5))
    assert [e.answer for e in h.entries()] == ["cloud"]


@pytest.mark.parametrize(("k", "delta"), [(0, 1.0), (2, -1.0), (2, float("nan"))])
def test_bad_configuration_is_refused_with_the_value(k: int, delta: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        ContextConfig(max_entries=k, delta=delta)


# --- property: replacement never loses an entry it should keep --------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("svlm"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("lvlm"), st.integers(0, 30), st.integers(-2, 15)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events, k=st.integers(1, 4), delta=st.integers(0, 12))
def test_history_equals_the_reference_model(
    events: list[tuple[str, int, int]], k: int, delta: int
) -> None:
    """After any sequence of arrivals the history is exactly what the rules say it should be."""
    h = history(k=k, delta=float(delta))
    svlm_first: dict[int, str] = {}
    accepted_cloud: tuple[int, str] | None = None
    for i, (kind, t, d) in enumerate(events):
        if kind == "svlm":
            h.add_svlm(S(t), Q, f"s{i}")
            svlm_first.setdefault(t, f"s{i}")
        else:
            h.replace(S(t), f"c{i}", arrival=S(t + d))
            if d <= delta and (accepted_cloud is None or t > accepted_cloud[0]):
                accepted_cloud = (t, f"c{i}")
    entries = h.entries()
    # Reference: the newest accepted cloud turn first, then the newest SVLM turns after it.
    # Only the K newest SVLM frames are remembered, so an SVLM answer that arrived for a
    # frame older than K newer ones is gone; the reference applies the same bound.
    kept_svlm = sorted(svlm_first)[-k:]
    expected: list[str] = []
    if accepted_cloud is not None:
        expected.append(accepted_cloud[1])
    after = [t for t in kept_svlm if accepted_cloud is None or t > accepted_cloud[0]]
    room = k - len(expected)
    expected += [svlm_first[t] for t in after[len(after) - room :]] if room > 0 else []
    assert [e.answer for e in entries] == expected
    assert len(entries) <= k
    assert len({e.stamp for e in entries}) == len(entries)
    assert all(e.source is Source.LVLM for e in entries[:1] if accepted_cloud) or not entries


@settings(max_examples=200, deadline=None)
@given(events=events, k=st.integers(1, 4), delta=st.integers(0, 12), frame=st.integers(0, 32))
def test_the_turns_rebuild_the_same_history_in_another_process(
    events: list[tuple[str, int, int]], k: int, delta: int, frame: int
) -> None:
    """context_manager sends ``turns()`` and svlm_node rebuilds the history from them: every
    frame is then shown exactly what the manager's own history (and the replay) shows it."""
    h = history(k=k, delta=float(delta))
    for i, (kind, t, d) in enumerate(events):
        if kind == "svlm":
            h.add_svlm(S(t), Q, f"s{i}")
        else:
            h.replace(S(t), f"c{i}", arrival=S(t + d))
    rebuilt = ContextReplacement.from_turns(h.config, h.turns())
    assert rebuilt.entries(before=S(frame)) == h.entries(before=S(frame))
    assert rebuilt.entries() == h.entries()


def test_a_frame_is_never_shown_its_own_cloud_answer() -> None:
    """The cloud answer for frame 5 arrives (0.3 s) before the SVLM starts on frame 5: the
    history holds it, but frame 5 is not shown it; the SVLM turns of frames 3 and 4 stay
    superseded by it (the rule), so frame 5 gets no context and frame 6 the cloud turn."""
    h = history(k=2)
    h.add_svlm(S(3), Q, "three")
    h.add_svlm(S(4), Q, "four")
    assert h.replace(S(5), "cloud five", arrival=S(5.3)) is ReplacementOutcome.INSERTED
    assert [e.answer for e in h.entries()] == ["cloud five"]
    assert h.entries(before=S(5)) == ()
    assert [e.answer for e in h.entries(before=S(6))] == ["cloud five"]
