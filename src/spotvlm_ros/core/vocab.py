"""Category vocabularies of the tasks, synonym maps between them, and a free-text answer parser.

Answers and ground truth are compared only after both are mapped into the task's
vocabulary: "person" (COCO), "pedestrian" (nuScenes, BDD100K) and "Pedestrian" (CamVid)
are one category.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

NUSCENES_CLASSES: tuple[str, ...] = (
    "car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
    "bicycle", "traffic_cone", "barrier",
)  # fmt: skip

BDD100K_CLASSES: tuple[str, ...] = (
    "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

# Words and phrases people (and VLMs) use, mapped to one or more canonical categories. A
# category a vocabulary lacks is dropped when mapping into that vocabulary.
COMMON_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "person": ("pedestrian",),
    "people": ("pedestrian",),
    "persons": ("pedestrian",),
    "man": ("pedestrian",),
    "men": ("pedestrian",),
    "woman": ("pedestrian",),
    "women": ("pedestrian",),
    "child": ("pedestrian",),
    "children": ("pedestrian",),
    "kid": ("pedestrian",),
    "walker": ("pedestrian",),
    "human": ("pedestrian",),
    "cyclist": ("rider", "bicycle"),
    "bicyclist": ("rider", "bicycle"),
    "biker": ("rider", "bicycle"),
    "motorcyclist": ("rider", "motorcycle"),
    "scooter rider": ("rider", "motorcycle"),
    "bike": ("bicycle",),
    "motorbike": ("motorcycle",),
    "motor bike": ("motorcycle",),
    "scooter": ("motorcycle",),
    "moped": ("motorcycle",),
    "automobile": ("car",),
    "sedan": ("car",),
    "suv": ("car",),
    "van": ("car",),
    "taxi": ("car",),
    "vehicle": ("car",),
    "pickup": ("truck",),
    "pickup truck": ("truck",),
    "lorry": ("truck",),
    "semi": ("truck",),
    "coach": ("bus",),
    "tram": ("train",),
    "streetcar": ("train",),
    "traffic cone": ("traffic_cone",),
    "cone": ("traffic_cone",),
    "pylon": ("traffic_cone",),
    "construction vehicle": ("construction_vehicle",),
    "excavator": ("construction_vehicle",),
    "bulldozer": ("construction_vehicle",),
    "crane": ("construction_vehicle",),
    "forklift": ("construction_vehicle",),
    "guardrail": ("barrier",),
    "barricade": ("barrier",),
    "jersey barrier": ("barrier",),
    "bicycle rider": ("rider", "bicycle"),
    # nuScenes' full category names
    "vehicle.car": ("car",),
    "human.pedestrian.adult": ("pedestrian",),
    "movable_object.trafficcone": ("traffic_cone",),
    "movable_object.barrier": ("barrier",),
}

_IRREGULAR_PLURALS = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "buses": "bus",
    "busses": "bus",
}
_NEGATIONS = {"no", "not", "without", "zero", "none", "neither", "nor"}
_WORD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def _singular(word: str) -> str:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    suffixes = (
        ("ies", "y"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("sses", "ss"),
        ("xes", "x"),
        ("s", ""),
    )
    for suffix, repl in suffixes:
        if (
            word.endswith(suffix)
            and len(word) > len(suffix) + 1
            and not word.endswith(("ss", "us"))
        ):
            return word[: -len(suffix)] + repl
    return word


def _key(label: str) -> str:
    return " ".join(_singular(w) for w in _WORD.findall(label.lower().replace("-", " ")))


@dataclass(frozen=True)
class Vocabulary:
    """A task's categories and the words that name them."""

    name: str
    labels: tuple[str, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: COMMON_SYNONYMS)

    def normalize(self, label: str) -> frozenset[str]:
        """The categories of this vocabulary that ``label`` names (empty if none)."""
        key = _key(label)
        found = set()
        for canonical in (key, key.replace(" ", "_")):
            if canonical in self._index:
                found.add(self._index[canonical])
        for target in self._synonyms_by_key.get(key, ()):
            if target in self.labels:
                found.add(target)
        if not found and key in _COCO_TO_CANONICAL:
            found.update(t for t in _COCO_TO_CANONICAL[key] if t in self.labels)
        return frozenset(found)

    def normalize_all(self, labels: Iterable[str]) -> frozenset[str]:
        """The union of :meth:`normalize` over ``labels``."""
        out: set[str] = set()
        for label in labels:
            out |= self.normalize(label)
        return frozenset(out)

    def parse_answer(self, text: str) -> frozenset[str]:
        """The categories a free-text answer mentions ("two cars and a cyclist").

        Phrases of up to three words are matched, longest first; a phrase that follows a
        negation ("no", "without", "zero", ...) within two words is not counted.
        """
        words = _WORD.findall(text.lower().replace("-", " "))
        found: set[str] = set()
        i = 0
        while i < len(words):
            for n in (3, 2, 1):
                phrase = " ".join(words[i : i + n])
                if len(words[i : i + n]) < n:
                    continue
                labels = self.normalize(phrase)
                if labels:
                    if not _NEGATIONS.intersection(words[max(0, i - 2) : i]):
                        found |= labels
                    i += n
                    break
            else:
                i += 1
        return frozenset(found)

    @cached_property
    def _index(self) -> dict[str, str]:
        return {_key(label).replace(" ", "_"): label for label in self.labels} | {
            _key(label): label for label in self.labels
        }

    @cached_property
    def _synonyms_by_key(self) -> dict[str, tuple[str, ...]]:
        return {_key(word): targets for word, targets in self.synonyms.items()}


COCO_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "pedestrian": ("person",),
    "rider": ("person",),
    "cyclist": ("person", "bicycle"),
    "bicyclist": ("person", "bicycle"),
    "motorcyclist": ("person", "motorcycle"),
    "bike": ("bicycle",),
    "motorbike": ("motorcycle",),
    "lorry": ("truck",),
    "tram": ("train",),
}

# COCO detector classes that name a driving category under another word.
_COCO_TO_CANONICAL: Mapping[str, tuple[str, ...]] = {"person": ("pedestrian",)}

VOCABULARIES: Mapping[str, Vocabulary] = {
    "nuscenes": Vocabulary("nuscenes", NUSCENES_CLASSES),
    "bdd100k": Vocabulary("bdd100k", BDD100K_CLASSES),
    "coco": Vocabulary("coco", COCO_CLASSES, synonyms=COCO_SYNONYMS),
}


def vocabulary(name: str) -> Vocabulary:
    """The vocabulary called ``name`` (nuscenes, bdd100k, coco)."""
    try:
        return VOCABULARIES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown vocabulary {name!r}; choose one of {', '.join(sorted(VOCABULARIES))}"
        ) from None
