"""Compression of the history into the SVLM's prompt budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.compression import ContextCompressor, PromptTemplate, count_words
from spotvlm_ros.core.context import HistoryEntry
from spotvlm_ros.core.types import Source, stamp_from_seconds

S = stamp_from_seconds
Q = "Which objects are in the image?"
CLOUD = HistoryEntry(S(7.0), Q, "car, truck, pedestrian", Source.LVLM)
OLD = HistoryEntry(S(8.0), Q, "a car and a bus on the left", Source.SVLM)
NEW = HistoryEntry(S(9.5), Q, "a car", Source.SVLM)


def test_default_template_names_source_and_age() -> None:
    out = ContextCompressor(budget=1000).compress([CLOUD, OLD, NEW], now=S(10.0))
    assert "from the cloud model, 3.0 s ago: car, truck, pedestrian" in out.text
    assert "from the on-board model, 0.5 s ago: a car" in out.text
    lines = out.text.splitlines()
    assert lines.index("- from the cloud model, 3.0 s ago: car, truck, pedestrian") < lines.index(
        "- from the on-board model, 2.0 s ago: a car and a bus on the left"
    )
    assert out.dropped == ()
    assert not out.truncated


def test_oldest_svlm_turn_goes_first_and_the_cloud_turn_last() -> None:
    full = ContextCompressor(budget=1000).compress([CLOUD, OLD, NEW], now=S(10.0))
    one_less = ContextCompressor(budget=full.tokens - 1).compress([CLOUD, OLD, NEW], now=S(10.0))
    assert one_less.dropped == (OLD,)
    assert one_less.entries == (CLOUD, NEW)
    tighter = ContextCompressor(budget=one_less.tokens - 1).compress([CLOUD, OLD, NEW], S(10.0))
    assert tighter.entries == (CLOUD,)
    assert tighter.dropped == (OLD, NEW)


def test_a_single_long_answer_is_shortened_to_fit() -> None:
    long = HistoryEntry(S(1.0), Q, " ".join(f"word{i}" for i in range(200)), Source.LVLM)
    out = ContextCompressor(budget=40).compress([long], now=S(2.0))
    assert out.truncated
    assert count_words(out.text) <= 40
    assert "word0 word1" in out.text
    assert out.text.rstrip().endswith("current image.")


def test_budget_too_small_for_anything_gives_empty_context() -> None:
    out = ContextCompressor(budget=3).compress([CLOUD, NEW], now=S(10.0))
    assert out.text == ""
    assert out.entries == ()
    assert set(out.dropped) == {CLOUD, NEW}


def test_no_history_no_context() -> None:
    assert ContextCompressor(budget=100).compress([], now=S(1.0)).text == ""


def test_custom_template_and_tokenizer() -> None:
    template = PromptTemplate(header="History:", entry="[{source}|{age:.0f}s] {answer}", footer="")
    out = ContextCompressor(budget=10_000, count_tokens=len, template=template).compress(
        [CLOUD], now=S(10.0)
    )
    assert out.text == "History:\n[cloud model|3s] car, truck, pedestrian"
    assert out.tokens == len(out.text)


def test_chat_messages_are_alternating_turns_of_the_kept_entries() -> None:
    msgs = ContextCompressor(budget=1000).chat_messages([CLOUD, NEW], now=S(10.0))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"].startswith("[3.0 s ago, answered by the cloud model]")
    assert msgs[1]["content"] == CLOUD.answer
    assert msgs[3]["content"] == NEW.answer


entries = st.lists(
    st.builds(
        HistoryEntry,
        stamp=st.integers(0, 10**10),
        question=st.text(max_size=30),
        answer=st.text(max_size=200),
        source=st.sampled_from([Source.SVLM, Source.LVLM]),
    ),
    max_size=6,
    unique_by=lambda e: e.stamp,
)


@settings(max_examples=300, deadline=None)
@given(history=entries, budget=st.integers(0, 120), by_chars=st.booleans())
def test_compression_always_fits_the_budget(
    history: list[HistoryEntry], budget: int, by_chars: bool
) -> None:
    counter = len if by_chars else count_words
    out = ContextCompressor(budget=budget, count_tokens=counter).compress(history, now=10**10)
    assert counter(out.text) <= budget
    assert out.tokens == counter(out.text)
    assert len(out.entries) + len(out.dropped) == len(history)
    # whatever is kept keeps its order
    assert [history.index(e) for e in out.entries] == sorted(history.index(e) for e in out.entries)


def test_a_frames_context_is_built_from_the_turns_before_it_in_the_given_tokens() -> None:
    from spotvlm_ros.core.context import ContextConfig, ContextReplacement

    h = ContextReplacement(ContextConfig(max_entries=2, delta=10.0))
    h.add_svlm(S(1.0), "q", "a car")
    h.replace(S(2.0), "two cars and a bus", arrival=S(2.2))
    chars = ContextCompressor(10_000, count_tokens=len)
    context = chars.for_frame(h, S(2.0))  # the frame the cloud has just answered
    assert context.entries == () and context.text == ""  # not its own answer (frame 1's
    # turn is superseded by the cloud turn, as the context replacement rule says)
    h.add_svlm(S(2.5), "q", "a bus")
    assert [e.answer for e in chars.for_frame(h, S(2.5)).entries] == ["two cars and a bus"]
    later = chars.for_frame(h, S(3.0))
    assert [e.answer for e in later.entries] == ["two cars and a bus", "a bus"]
    assert "from the cloud model, 1.0 s ago: two cars and a bus" in later.text
    assert later.tokens == len(later.text)  # counted with the given counter (characters here)
