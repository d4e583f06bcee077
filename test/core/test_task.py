"""The three tasks: questions, parsers, scoring rules, vocabularies and history turns."""

from __future__ import annotations

import pytest

from spotvlm_ros.core.compression import ContextCompressor
from spotvlm_ros.core.context import HistoryEntry
from spotvlm_ros.core.evaluation import EvaluationLog
from spotvlm_ros.core.task import TASKS, AnswerForm, task, task_question
from spotvlm_ros.core.types import NS_PER_S, Source
from spotvlm_ros.core.vocab import ACE_ACTIONS, HAGRID_GESTURES, IPN_GESTURES

GESTURE = task("gesture")
HAGRID = GESTURE.vocabulary()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("like", {"like"}),  # a bare label
        ("peace_inverted", {"peace_inverted"}),
        ('The gesture is "two_up".', {"two_up"}),  # inside a sentence, in quotes
        ("It's 'three2'", {"three2"}),
        ("Thumbs up!", {"like"}),  # synonyms
        ("a thumbs-down", {"dislike"}),
        ("The person makes a V sign.", {"peace"}),
        ("inverted peace sign", {"peace_inverted"}),
        ("No gesture.", {"no_gesture"}),
        ("There is no gesture in this image", {"no_gesture"}),
        ("OK", {"ok"}),
        ("It is a fist, not a palm.", {"fist"}),  # the negated one is not named
        ("The hand shows 'palm' (not a stop sign)", {"palm"}),  # the quoted choice wins
        ("It looks like a peace sign.", {"peace"}),  # 'like' is an everyday word here
        ("The person holds up one open hand", {"palm"}),
        ("I'd say the gesture is rock", {"rock"}),  # only everyday words: the one named
        ("peace or two_up", set()),  # two classes: ambiguous, none (never two)
        ("It is either a fist or a palm.", set()),
        ("I cannot tell.", set()),
        ("", set()),
    ],
)
def test_a_gesture_reply_maps_to_one_class_or_none(reply: str, expected: set[str]) -> None:
    assert set(GESTURE.parse(HAGRID, reply)) == expected


def test_every_gesture_parse_gives_at_most_one_class() -> None:
    # every class name, and every pair of them, parsed: never two classes
    for a in HAGRID.labels:
        assert GESTURE.parse(HAGRID, a) == {a}
        for b in HAGRID.labels:
            assert len(GESTURE.parse(HAGRID, f"{a} and {b}")) <= 1


def test_ipn_gestures_by_code_and_by_name() -> None:
    ipn = GESTURE.vocabulary("ipn")
    assert GESTURE.parse(ipn, "B0A") == {"point_one"}
    assert GESTURE.parse(ipn, "It is a double click with two fingers.") == {"double_click_two"}
    assert GESTURE.parse(ipn, "zoom out") == {"zoom_out"}
    assert set(ipn.labels) == set(IPN_GESTURES)


def test_the_gesture_question_names_every_class_with_its_description() -> None:
    question = task_question("gesture")
    for label, description in HAGRID_GESTURES.items():
        assert f"- {label}: {description}" in question
    assert "exactly one" in question
    ipn = task_question("gesture", "ipn")
    assert "- point_one: pointing with one finger" in ipn


CAPTION = task("caption")
ACE = CAPTION.vocabulary()


@pytest.mark.parametrize(
    ("caption", "truth", "correct"),
    [
        ("The person cracks an egg into a bowl.", {"breaking"}, True),
        ("She is whisking the eggs with chopsticks.", {"mixing"}, True),
        ("An egg is being broken on the rim of the bowl.", {"breaking"}, True),
        ("The eggs are beaten.", {"mixing"}, True),
        ("Stirring, then cracking another egg.", {"breaking"}, True),  # names it, among others
        ("The person flips the omelette over.", {"turning"}, True),
        ("Someone slices ham on a board.", {"cutting"}, True),
        ("He adds salt to the pan.", {"seasoning"}, True),
        ("The person peels a boiled egg.", {"peeling"}, True),
        ("The person frying eggs in a pan.", {"baking"}, True),
        ("The person cracks an egg.", {"mixing"}, False),  # another action
        ("The person is not cutting anything.", {"cutting"}, False),  # negated
        ("The person stands by the stove.", set(), True),  # 'none': no action named
        ("The person waits, then stirs.", set(), False),  # 'none' but an action named
        ("", {"breaking"}, False),
    ],
)
def test_a_caption_is_correct_when_it_names_the_reference_action(
    caption: str, truth: set[str], correct: bool
) -> None:
    assert CAPTION.correct(frozenset(truth), CAPTION.parse(ACE, caption)) is correct


def test_an_invalid_frame_is_never_correct() -> None:
    for t in TASKS.values():
        assert not t.correct(frozenset(), None)


def test_the_tasks_and_their_forms() -> None:
    assert {n: t.form for n, t in TASKS.items()} == {
        "objects": AnswerForm.LABELS,
        "gesture": AnswerForm.LABEL,
        "caption": AnswerForm.TEXT,
    }
    assert task("objects").default_vocabulary == "bdd100k"
    assert set(ACE.labels) == set(ACE_ACTIONS) - {"none"}
    with pytest.raises(ValueError, match="unknown task 'pose'; choose one of objects"):
        task("pose")
    with pytest.raises(ValueError, match="task 'caption' takes the vocabularies ace, not 'coco'"):
        CAPTION.vocabulary("coco")
    assert task_question("objects", "", "How many cars?") == "How many cars?"


def test_accuracy_follows_the_tasks_rule() -> None:
    log = EvaluationLog(ACE.labels, CAPTION.correct)
    captions = {1: ("cracking an egg", {"breaking"}), 2: ("idle", set()), 3: ("stir", {"cutting"})}
    for stamp, (text, truth) in captions.items():
        log.truth(stamp, truth)
        log.final(stamp, Source.SVLM, CAPTION.parse(ACE, text), 0.1)
    log.truth(4, {"boiling"})
    log.final(4, Source.NONE, (), 0.0)  # no answer in time
    final = log.report()["scores"]["final"]
    assert final["frames_scored"] == 4
    assert final["accuracy"] == pytest.approx(2 / 4)


def test_a_gesture_history_turn_reads_as_a_gesture() -> None:
    compressor = ContextCompressor(200, template=GESTURE.template)
    entry = HistoryEntry(0, "q", "peace", Source.LVLM)
    text = compressor.compress([entry], 2 * NS_PER_S).text
    assert text.splitlines() == [
        "Gestures recognised in the last seconds (oldest first):",
        "- 2.0 s ago, the cloud model saw: peace",
        "The person may still hold it or have changed it; answer for the current image.",
    ]


def test_a_redelivered_event_counts_once() -> None:
    """DDS may deliver a result twice (a publisher resending after a late match): the report is
    the same as with one delivery."""
    once, twice = EvaluationLog(ACE.labels), EvaluationLog(ACE.labels)
    events = [
        lambda log: log.truth(1, {"cutting"}),
        lambda log: log.svlm(1, {"cutting"}, tokens_used=10, tokens_full=40, lvlm_history=[0]),
        lambda log: log.svlm(2, None),  # an SVLM error
        lambda log: log.svlm(3, None, dropped=True),
        lambda log: log.lvlm(1, None),
        lambda log: log.lvlm(2, {"cutting"}),
        lambda log: log.final(1, Source.SVLM, {"cutting"}, 0.2),
    ]
    for event in events:
        event(once)
        event(twice)
        event(twice)
    twice.svlm(4, {"stir"}, tokens_used=40, tokens_full=40)  # a new frame still counts
    once.svlm(4, {"stir"}, tokens_used=40, tokens_full=40)
    assert twice.report() == once.report()
    report = once.report()
    assert (report["svlm_errors"], report["svlm_dropped"], report["lvlm_failures"]) == (1, 1, 1)
    assert report["mean_visual_tokens"] == 25.0
