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
class Mention:
    """A category named in a text: where (word index) and by which phrase."""

    label: str
    start: int
    phrase: str


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

        Phrases of up to five words are matched, longest first; a phrase that follows a
        negation ("no", "without", "zero", ...) within two words is not counted.
        """
        return frozenset(m.label for m in self.mentions(text))

    def mentions(self, text: str) -> list[Mention]:
        """Each category a free-text answer names, where it is first named and by which
        phrase, in the order named (negated phrases left out, as in parse_answer)."""
        words = _WORD.findall(text.lower().replace("-", " "))
        found: dict[str, Mention] = {}
        i = 0
        while i < len(words):
            for n in (5, 4, 3, 2, 1):
                phrase = " ".join(words[i : i + n])
                if len(words[i : i + n]) < n:
                    continue
                labels = self.normalize(phrase)
                if labels:
                    if not _NEGATIONS.intersection(words[max(0, i - 2) : i]):
                        for label in sorted(labels):
                            found.setdefault(label, Mention(label, i, phrase))
                    i += n
                    break
            else:
                i += 1
        return list(found.values())

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

# --- hand gestures ------------------------------------------------------------------------

HAGRID_GESTURES: Mapping[str, str] = {
    "call": "thumb and little finger stretched out, as if holding a phone",
    "dislike": "thumb pointing down (thumbs down)",
    "fist": "a closed fist",
    "four": "four fingers up, the thumb folded in",
    "like": "thumb pointing up (thumbs up)",
    "mute": "index finger held against the lips (shush)",
    "ok": "thumb and index finger touching in a circle (OK sign)",
    "one": "only the index finger up",
    "palm": "open palm, fingers spread",
    "peace": "index and middle finger up in a V, palm to the camera (V sign)",
    "peace_inverted": "the V sign with the back of the hand to the camera",
    "rock": "index and little finger up (horns)",
    "stop": "flat palm to the camera, fingers together",
    "stop_inverted": "flat hand with its back to the camera, fingers together",
    "three": "index, middle and ring finger up",
    "three2": "thumb, index and middle finger up",
    "two_up": "index and middle finger up and together, palm to the camera",
    "two_up_inverted": "index and middle finger up and together, back of the hand to the camera",
    "no_gesture": "no hand gesture (a relaxed hand, or no hand)",
}
"""HaGRID's 19 classes and what each looks like (the gesture question lists them)."""

GESTURE_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "thumbs up": ("like",),
    "thumb up": ("like",),
    "thumbs down": ("dislike",),
    "thumb down": ("dislike",),
    "v sign": ("peace",),
    "victory": ("peace",),
    "victory sign": ("peace",),
    "peace sign": ("peace",),
    "inverted peace": ("peace_inverted",),
    "inverted peace sign": ("peace_inverted",),
    "inverted v sign": ("peace_inverted",),
    "reverse peace": ("peace_inverted",),
    "okay": ("ok",),
    "ok sign": ("ok",),
    "shush": ("mute",),
    "shh": ("mute",),
    "finger on lips": ("mute",),
    "finger on the lips": ("mute",),
    "phone": ("call",),
    "call me": ("call",),
    "shaka": ("call",),
    "horns": ("rock",),
    "rock on": ("rock",),
    "open palm": ("palm",),
    "open hand": ("palm",),
    "high five": ("palm",),
    "closed fist": ("fist",),
    "index finger up": ("one",),
    "pointing up": ("one",),
    "halt": ("stop",),
    "stop sign": ("stop",),
    "inverted stop": ("stop_inverted",),
    "two up": ("two_up",),
    "inverted two up": ("two_up_inverted",),
    "no gesture": ("no_gesture",),
    "no hand gesture": ("no_gesture",),
    "non gesture": ("no_gesture", "non_gesture"),
    "nongesture": ("no_gesture", "non_gesture"),
    # IPN Hand's annotation codes and its class names
    "d0x": ("non_gesture",),
    "b0a": ("point_one",),
    "b0b": ("point_two",),
    "g01": ("click_one",),
    "g02": ("click_two",),
    "g03": ("throw_up",),
    "g04": ("throw_down",),
    "g05": ("throw_left",),
    "g06": ("throw_right",),
    "g07": ("open_twice",),
    "g08": ("double_click_one",),
    "g09": ("double_click_two",),
    "g10": ("zoom_in",),
    "g11": ("zoom_out",),
    "pointing with one finger": ("point_one",),
    "pointing with two fingers": ("point_two",),
    "click with one finger": ("click_one",),
    "click with two fingers": ("click_two",),
    "double click with one finger": ("double_click_one",),
    "double click with two fingers": ("double_click_two",),
}
"""Names people and VLMs give the gestures; a target a vocabulary lacks is dropped."""

IPN_GESTURES: Mapping[str, tuple[str, str]] = {
    "non_gesture": ("D0X", "no gesture"),
    "point_one": ("B0A", "pointing with one finger"),
    "point_two": ("B0B", "pointing with two fingers"),
    "click_one": ("G01", "click with one finger"),
    "click_two": ("G02", "click with two fingers"),
    "throw_up": ("G03", "a hand throwing upwards"),
    "throw_down": ("G04", "a hand throwing downwards"),
    "throw_left": ("G05", "a hand throwing to the left"),
    "throw_right": ("G06", "a hand throwing to the right"),
    "open_twice": ("G07", "the hand opened twice"),
    "double_click_one": ("G08", "double click with one finger"),
    "double_click_two": ("G09", "double click with two fingers"),
    "zoom_in": ("G10", "zoom in (fingers spreading)"),
    "zoom_out": ("G11", "zoom out (fingers pinching)"),
}
"""IPN Hand's 14 classes: our label -> (its annotation code, what it is)."""

# --- cooking actions (ACE, Actions for Cooking Eggs) -----------------------------------------

ACE_ACTIONS: Mapping[str, str] = {
    "breaking": "breaking (cracking) an egg",
    "mixing": "mixing, stirring or whisking",
    "baking": "baking or frying in a pan",
    "turning": "turning (flipping) food over",
    "cutting": "cutting or slicing",
    "boiling": "boiling in a pot",
    "seasoning": "seasoning (adding salt, pepper, sauce)",
    "peeling": "peeling (a boiled egg)",
    "none": "none of these (waiting, moving things, idle)",
}
"""ACE's eight cooking actions and 'none', with the words that describe each."""

_ACTION_WORDS = {
    "breaking": "break breaks broke broken crack cracks cracking cracked",
    "mixing": "mix mixes mixed stir stirs stirring stirred whisk whisks whisking whisked beat "
    "beaten "
    "beats beating scramble scrambling",
    "baking": "bake bakes baked fry fries frying fried",
    "turning": "turn turns turned flip flips flipping flipped roll rolling",
    "cutting": "cut cuts slice slices slicing sliced chop chops chopping chopped dice dicing",
    "boiling": "boil boils boiled simmer simmering",
    "seasoning": "season seasons seasoned salt salts salting pepper peppering sprinkle "
    "sprinkles sprinkling",
    "peeling": "peel peels peeled shell shells shelling shelled",
}
ACTION_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    word: (action,) for action, words in _ACTION_WORDS.items() for word in words.split()
}
"""Verb forms and near-synonyms of the actions (a caption names actions in its own words)."""

VOCABULARIES: Mapping[str, Vocabulary] = {
    "nuscenes": Vocabulary("nuscenes", NUSCENES_CLASSES),
    "bdd100k": Vocabulary("bdd100k", BDD100K_CLASSES),
    "coco": Vocabulary("coco", COCO_CLASSES, synonyms=COCO_SYNONYMS),
    "hagrid": Vocabulary("hagrid", tuple(HAGRID_GESTURES), synonyms=GESTURE_SYNONYMS),
    "ipn": Vocabulary("ipn", tuple(IPN_GESTURES), synonyms=GESTURE_SYNONYMS),
    "ace": Vocabulary("ace", tuple(a for a in ACE_ACTIONS if a != "none"), ACTION_SYNONYMS),
}
"""Every task's vocabularies (objects: nuscenes, bdd100k, coco; gesture: hagrid, ipn;
caption: ace, whose 'none' is the empty set)."""


def vocabulary(name: str) -> Vocabulary:
    """The vocabulary called ``name`` (one of VOCABULARIES)."""
    try:
        return VOCABULARIES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown vocabulary {name!r}; choose one of {', '.join(sorted(VOCABULARIES))}"
        ) from None
