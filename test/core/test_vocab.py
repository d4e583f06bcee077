"""Task vocabularies, synonyms and the free-text answer parser."""

from __future__ import annotations

import pytest

from spotvlm_ros.core.vocab import (
    BDD100K_CLASSES,
    COCO_CLASSES,
    NUSCENES_CLASSES,
    vocabulary,
)


def test_vocabulary_sizes() -> None:
    assert len(NUSCENES_CLASSES) == 10
    assert len(BDD100K_CLASSES) == 8
    assert len(COCO_CLASSES) == 80
    assert COCO_CLASSES[:3] == ("person", "bicycle", "car")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bdd100k", "I can see two cars and a cyclist.", {"car", "rider", "bicycle"}),
        ("nuscenes", "I can see two cars and a cyclist.", {"car", "bicycle"}),
        ("coco", "I can see two cars and a cyclist.", {"car", "person", "bicycle"}),
        (
            "nuscenes",
            "Three buses, a traffic cone and some people.",
            {"bus", "traffic_cone", "pedestrian"},
        ),
        ("bdd100k", "There are no pedestrians, only trucks.", {"truck"}),
        ("bdd100k", "Without any bicycles; a tram passes.", {"train"}),
        ("nuscenes", "car, truck, pedestrian", {"car", "truck", "pedestrian"}),
        ("bdd100k", "A Motorbike and a PERSON.", {"motorcycle", "pedestrian"}),
        ("nuscenes", "construction vehicles near barriers", {"construction_vehicle", "barrier"}),
        ("bdd100k", "", set()),
        ("bdd100k", "The road is empty.", set()),
        ("coco", "traffic lights and a stop sign", {"traffic light", "stop sign"}),
    ],
)
def test_parse_answer(name: str, text: str, expected: set[str]) -> None:
    assert vocabulary(name).parse_answer(text) == expected


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [
        ("bdd100k", "person", {"pedestrian"}),
        ("nuscenes", "Pedestrian", {"pedestrian"}),
        ("nuscenes", "traffic cone", {"traffic_cone"}),
        ("nuscenes", "train", set()),  # no such class in nuScenes
        ("bdd100k", "bike", {"bicycle"}),
        ("coco", "pedestrian", {"person"}),
        ("nuscenes", "vehicle.car", {"car"}),
    ],
)
def test_normalize_label(name: str, label: str, expected: set[str]) -> None:
    assert vocabulary(name).normalize(label) == expected


def test_unknown_vocabulary_names_the_choices() -> None:
    with pytest.raises(ValueError, match="ace, bdd100k, coco, hagrid, ipn, nuscenes"):
        vocabulary("kitti")
