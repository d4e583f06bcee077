"""The paper's three real-time tasks, each one concept: its question, the form of its answer,
how an answer is parsed into labels, its vocabularies, its metric, what its ROIs are, and
how a history turn reads in the SVLM's context.

- ``objects``: multi-object recognition (nuScenes, BDD100K, CamVid): the answer names a set
  of categories; Micro-F1, Macro-F1 and 0-1 exact match; the ROIs are the objects' boxes.
- ``gesture``: hand-gesture recognition (HaGRID, IPN Hand): the answer names exactly one
  class; accuracy; the ROI is the hand's box.
- ``caption``: video-frame captioning (ACE, Actions for Cooking Eggs): the answer is free
  text; it is correct when it names the reference action (and, for the reference 'none',
  names no action), after normalisation and synonyms (docs/evaluation.md); accuracy; the
  ROIs are the regions the caption is about.

The nodes, the replay, the evaluator and the LVLM client take a task by name (``task``
parameter, ``task:=`` launch argument, ``--task``); its vocabulary is chosen apart
(``task_vocabulary``, '' = the task's default).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from spotvlm_ros.core.compression import PromptTemplate
from spotvlm_ros.core.vocab import (
    ACE_ACTIONS,
    HAGRID_GESTURES,
    IPN_GESTURES,
    Vocabulary,
    vocabulary,
)

DEFAULT_DEADLINE_S = 1.0
"""The real-time deadline of an answer, from its frame's stamp (s)."""

DEFAULT_QUESTION = "Which objects are in the image? Answer with a short list of object categories."
"""The multi-object recognition question asked about every frame."""


class AnswerForm(enum.Enum):
    """What an answer of a task is."""

    LABELS = "labels"  # a set of categories
    LABEL = "label"  # exactly one class (or none: unparsable, ambiguous)
    TEXT = "text"  # free text, scored by the labels (actions) it names


def _gesture_question(vocab: Vocabulary) -> str:
    descriptions: Mapping[str, str] = (
        HAGRID_GESTURES
        if vocab.name == "hagrid"
        else {label: text for label, (_, text) in IPN_GESTURES.items()}
    )
    lines = "\n".join(f"- {label}: {descriptions.get(label, label)}" for label in vocab.labels)
    return (
        "Which hand gesture does the person make? Choose exactly one of these classes:\n"
        f"{lines}\nAnswer with the class name only."
    )


def _caption_question(vocab: Vocabulary) -> str:
    del vocab
    actions = ", ".join(a for a in ACE_ACTIONS if a != "none")
    return (
        "Describe in one short sentence what the person is doing with the food right now "
        f"(for example {actions}, or nothing)."
    )


def _objects_question(vocab: Vocabulary) -> str:
    del vocab
    return DEFAULT_QUESTION


_WORDS = re.compile(r"[A-Za-z0-9_]+")
_QUOTED = re.compile(r"[\"'`“”‘’]([^\"'`“”‘’]{1,60})[\"'`“”‘’]")


@dataclass(frozen=True)
class Task:
    """One real-time task."""

    name: str
    description: str
    form: AnswerForm
    vocabularies: tuple[str, ...]  # the first is the default
    metric: str
    rois: str  # what its ROIs are
    roi_request: str  # what the LVLM is asked to box (the JSON part of the prompt)
    answer_form: str  # what the LVLM is asked to answer with, before the JSON
    template: PromptTemplate  # how a history turn reads in the SVLM's context
    datasets: str

    @property
    def default_vocabulary(self) -> str:
        """The vocabulary used when none is named."""
        return self.vocabularies[0]

    def vocabulary(self, name: str = "") -> Vocabulary:
        """The task's vocabulary ``name`` ('' = its default); another task's is refused."""
        chosen = (name or self.default_vocabulary).lower()
        if chosen not in self.vocabularies:
            raise ValueError(
                f"task {self.name!r} takes the vocabularies {', '.join(self.vocabularies)}, "
                f"not {chosen!r}"
            )
        return vocabulary(chosen)

    def question(self, vocab: Vocabulary) -> str:
        """The default question of this task in ``vocab``."""
        return _QUESTIONS[self.form](vocab)

    def parse(self, vocab: Vocabulary, answer: str) -> frozenset[str]:
        """The labels an answer gives: a set (objects), at most one class (gesture), or the
        actions a caption names."""
        if self.form is not AnswerForm.LABEL:
            return vocab.parse_answer(answer)
        return parse_one_label(vocab, answer)

    def correct(self, truth: frozenset[str], predicted: frozenset[str] | None) -> bool:
        """Whether an answer counts as correct (an invalid frame, None, never does)."""
        if predicted is None:
            return False
        if self.form is AnswerForm.TEXT:
            # the caption names the reference action; for 'none' (the empty set), none
            return truth <= predicted if truth else not predicted
        return predicted == truth


WEAK_WORDS = frozenset({"like", "one", "call", "stop", "ok", "okay", "four", "three", "rock"})
"""Class names that are everyday words ("it looks like a peace sign", "one hand"): in a
sentence they name a class only where no other class is named."""


def parse_one_label(vocab: Vocabulary, answer: str) -> frozenset[str]:
    """One class from a reply, or none (never two):

    1. a class in quotes wins (the model quoting its choice);
    2. a short reply (up to three words: "like", "Thumbs up!", "no gesture") names it;
    3. in a sentence, the one class named by a phrase that is not an everyday word
       (WEAK_WORDS), else the one class named by an everyday word;
    two different classes at the same step ("peace or two_up") are ambiguous: none."""
    for quoted in _QUOTED.findall(answer):
        named = {m.label for m in vocab.mentions(quoted)}
        if len(named) == 1:
            return frozenset(named)
    mentions = vocab.mentions(answer)
    if len(_WORDS.findall(answer)) <= 3:
        named = {m.label for m in mentions}
        return frozenset(named) if len(named) == 1 else frozenset()
    strong = {m.label for m in mentions if m.phrase not in WEAK_WORDS}
    weak = {m.label for m in mentions if m.phrase in WEAK_WORDS}
    for named in (strong, weak):
        if named:
            return frozenset(named) if len(named) == 1 else frozenset()
    return frozenset()


_QUESTIONS = {
    AnswerForm.LABELS: _objects_question,
    AnswerForm.LABEL: _gesture_question,
    AnswerForm.TEXT: _caption_question,
}

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="objects",
            description="multi-object recognition",
            form=AnswerForm.LABELS,
            vocabularies=("bdd100k", "nuscenes", "coco"),
            metric="Micro-F1, Macro-F1, 0-1 exact match",
            rois="the objects' boxes",
            roi_request="every object you mention",
            answer_form="one short sentence",
            template=PromptTemplate(),
            datasets="nuScenes, BDD100K, CamVid",
        ),
        Task(
            name="gesture",
            description="hand-gesture recognition",
            form=AnswerForm.LABEL,
            vocabularies=("hagrid", "ipn"),
            metric="accuracy",
            rois="the hand's box",
            roi_request="the hand that makes the gesture, labelled with the gesture class",
            answer_form="the class name only",
            template=PromptTemplate(
                header="Gestures recognised in the last seconds (oldest first):",
                entry="- {age:.1f} s ago, the {source} saw: {answer}",
                footer="The person may still hold it or have changed it; answer for the "
                "current image.",
            ),
            datasets="HaGRID, IPN Hand",
        ),
        Task(
            name="caption",
            description="video-frame captioning",
            form=AnswerForm.TEXT,
            vocabularies=("ace",),
            metric="accuracy (the caption names the reference action)",
            rois="the regions the caption is about",
            roi_request="the hands and the objects your sentence is about",
            answer_form="one short sentence",
            template=PromptTemplate(
                header="What the person was doing (oldest first):",
                entry="- {age:.1f} s ago, per the {source}: {answer}",
                footer="Describe what happens in the current image.",
            ),
            datasets="ACE (Actions for Cooking Eggs)",
        ),
    )
}
"""The tasks by name."""

DEFAULT_TASK = "objects"

TASK_HEADER = "X-SpotVLM-Task"
"""The HTTP header the LVLM client sends with every request: the task asked about. Other
servers ignore it; the package's own server refuses a task its backend cannot answer (the
detector answers only objects)."""


def task(name: str) -> Task:
    """The task called ``name`` (objects, gesture, caption)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def task_question(task_name: str, vocabulary_name: str = "", question: str = "") -> str:
    """The question asked about every frame: ``question`` if given, else the task's own."""
    if question:
        return question
    chosen = task(task_name)
    return chosen.question(chosen.vocabulary(vocabulary_name))
