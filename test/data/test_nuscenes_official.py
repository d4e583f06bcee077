"""The nuScenes reader for the official download layout, on a tiny dataset written in the
official schema whose 2D boxes are worked out by hand, and `spotvlm-make-bag nuscenes`.

The scene (global frame: x east, y north, z up; ego: x forward, y left, z up):

* keyframe 1: the ego vehicle at (10, 20, 0) looking east (identity rotation);
  CAM_FRONT 1 m ahead of the ego origin and 1.5 m up, so at (11, 20, 1.5) in the world;
  CAM_BACK at the ego origin, 1.5 m up, looking back, at (10, 20, 1.5).
* keyframe 2, 0.5 s later: the ego at (12, 20, 0) turned 90 degrees left (looking north),
  so CAM_FRONT is at (12, 20, 0) + R(90 deg) (1, 0, 1.5) = (12, 21, 1.5).
* Both cameras: 320 x 240 images, fx = fy = 100, cx = 160, cy = 120, so a camera-frame
  point (x, y, z) is seen at u = 100 x / z + 160, v = 100 y / z + 120.
* CAM_FRONT's rotation [0.5, -0.5, 0.5, -0.5] (w, x, y, z) turns camera z (forward) to ego
  x, camera x (right) to ego -y and camera y (down) to ego -z: a point offset (dx, dy, dz)
  from the camera in the ego frame is at camera (x, y, z) = (-dy, -dz, dx). CAM_BACK's
  [0.5, -0.5, -0.5, 0.5] looks back: camera (x, y, z) = (dy, -dz, -dx).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.core.vocab import vocabulary
from spotvlm_ros.data.frames import DatasetError, LabelledFrame
from spotvlm_ros.data.nuscenes import find_version, nuscenes_official, quaternion_matrix
from spotvlm_ros.data.readers import READERS

SHARED_NUSCENES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nuscenes_mini"

T0 = 1532402927612460  # µs, CAM_FRONT of keyframe 1 (a real nuScenes timestamp)
LOG = "n015-2018-07-24-11-22-45+0800"
WIDTH, HEIGHT = 320, 240
K = [[100.0, 0.0, 160.0], [0.0, 100.0, 120.0], [0.0, 0.0, 1.0]]
IDENTITY = [1.0, 0.0, 0.0, 0.0]
YAW_90 = [math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # 90 degrees left about z
CAM_FRONT_ROTATION = [0.5, -0.5, 0.5, -0.5]
CAM_BACK_ROTATION = [0.5, -0.5, -0.5, 0.5]

# Track ids are the instances' positions in instance.json (not in the annotation table).
TRUCK, BUS, CAR, BICYCLE, PEDESTRIAN, BARRIER = range(6)
INSTANCES = [
    ("truck", "vehicle.truck"),
    ("bus", "vehicle.bus.rigid"),
    ("car", "vehicle.car"),
    ("bicycle", "vehicle.bicycle"),
    ("pedestrian", "human.pedestrian.adult"),
    ("barrier", "movable_object.barrier"),
]

# The hand-worked 2D boxes (x1, y1, x2, y2) of keyframe 1 in CAM_FRONT, by track id.
FRONT_1 = {
    # car: center 10 m ahead of the camera, size w 2, l 4, h 2, turned 90 degrees so that
    # its length lies across the view: dx in {9, 11}, dy in {-2, 2}, dz in {-1, 1};
    # camera x in {-2, 2}, y in {-1, 1}, z in {9, 11}; the widest at z = 9:
    # u = 160 -+ 200 / 9 = 137.78 / 182.22, v = 120 -+ 100 / 9 = 108.89 / 131.11
    CAR: ("car", (137.78, 108.89, 182.22, 131.11)),
    # pedestrian: center (+4.5, +1.5, 0) from the camera, 1 x 1 x 2: dx in {4, 5},
    # dy in {1, 2}, dz in {-1, 1}; camera x in {-2, -1}, z in {4, 5}:
    # u from 160 - 100 * 2 / 4 = 110 to 160 - 100 * 1 / 5 = 140,
    # v from 120 - 100 / 4 = 95 to 120 + 100 / 4 = 145
    PEDESTRIAN: ("pedestrian", (110.0, 95.0, 140.0, 145.0)),
    # bus (vehicle.bus.rigid): center (+3, -3, 0), 2 x 2 x 2: dx in {2, 4}, dy in {-4, -2};
    # camera x in {2, 4}, z in {2, 4}: u from 160 + 100 * 2 / 4 = 210 to
    # 160 + 100 * 4 / 2 = 360, clipped to the image's 320; v = 120 -+ 100 / 2 = 70 / 170
    BUS: ("bus", (210.0, 70.0, 320.0, 170.0)),
    # barrier: center (+1, -2.5, 0), w 1, l 4, h 2: dx in {-1, 3} straddles the camera;
    # only the 4 corners at z = 3 are in front: camera x in {2, 3}, y in {-1, 1}:
    # u = 160 + 200 / 3 = 226.67 to 160 + 300 / 3 = 260, v = 120 -+ 100 / 3 = 86.67 / 153.33
    BARRIER: ("barrier", (226.67, 86.67, 260.0, 153.33)),
    # dropped: the truck 10 m behind the camera (every corner at z < 0) and the bicycle
    # far to the left (center (+5, +20, 0): u at most 160 - 100 * 19.5 / 6 = -165)
}
# Keyframe 1 in CAM_BACK: the truck, center 9 m behind the camera, w 2, l 4, h 2, not
# turned: dx in {-11, -7}, dy in {-1, 1}; camera x = dy in {-1, 1}, z = -dx in {7, 11}:
# u = 160 -+ 100 / 7 = 145.71 / 174.29, v alike 105.71 / 134.29. The car, pedestrian, bus
# and bicycle are in front of the vehicle (z < 0 for CAM_BACK); the barrier's nearest
# corners are level with CAM_BACK (z = 0), not in front of it.
BACK_1 = {TRUCK: ("truck", (145.71, 105.71, 174.29, 134.29))}
# Keyframe 2 in CAM_FRONT: the car, now at (12, 29, 1.5), not turned (length along the
# world's x); the ego looks north, so the offset (0, 8, 0) from the camera is 8 m straight
# ahead (ego dx = 8) and the car's length lies across the view: dx in {7, 9},
# dy in {-2, 2}: u = 160 -+ 200 / 7 = 131.43 / 188.57, v = 120 -+ 100 / 7 = 105.71 / 134.29
FRONT_2 = {CAR: ("car", (131.43, 105.71, 188.57, 134.29))}

GREY_1, GREY_2, GREY_BACK, GREY_SWEEP = 60, 180, 120, 240


def image_name(channel: str, timestamp: int) -> str:
    """The nuScenes file name of a camera image."""
    return f"{LOG}__{channel}__{timestamp}.jpg"


def official_tables() -> dict[str, list[dict[str, Any]]]:
    """The tables of the tiny dataset, in the official schema (records by table name)."""
    t_back, t_sweep, t_2 = T0 + 25_065, T0 + 100_000, T0 + 500_000
    tables: dict[str, list[dict[str, Any]]] = {
        "log": [
            {
                "token": "log1",
                "logfile": LOG,
                "vehicle": "n015",
                "date_captured": "2018-07-24",
                "location": "singapore-onenorth",
            }
        ],
        "scene": [
            {
                "token": "scene1",
                "log_token": "log1",
                "nbr_samples": 2,
                "first_sample_token": "s1",
                "last_sample_token": "s2",
                "name": "scene-0001",
                "description": "two keyframes, hand-made",
            }
        ],
        "sample": [
            {
                "token": "s1",
                "timestamp": T0 + 35_000,
                "prev": "",
                "next": "s2",
                "scene_token": "scene1",
            },
            {
                "token": "s2",
                "timestamp": t_2 + 35_000,
                "prev": "s1",
                "next": "",
                "scene_token": "scene1",
            },
        ],
        "sensor": [
            {"token": "front", "channel": "CAM_FRONT", "modality": "camera"},
            {"token": "back", "channel": "CAM_BACK", "modality": "camera"},
            {"token": "lidar", "channel": "LIDAR_TOP", "modality": "lidar"},
        ],
        "calibrated_sensor": [
            {
                "token": "cs_front",
                "sensor_token": "front",
                "translation": [1.0, 0.0, 1.5],
                "rotation": CAM_FRONT_ROTATION,
                "camera_intrinsic": K,
            },
            {
                "token": "cs_back",
                "sensor_token": "back",
                "translation": [0.0, 0.0, 1.5],
                "rotation": CAM_BACK_ROTATION,
                "camera_intrinsic": K,
            },
            {
                "token": "cs_lidar",
                "sensor_token": "lidar",
                "translation": [0.9, 0.0, 1.8],
                "rotation": IDENTITY,
                "camera_intrinsic": [],
            },
        ],
        "ego_pose": [
            {
                "token": "ep1",
                "timestamp": T0,
                "translation": [10.0, 20.0, 0.0],
                "rotation": IDENTITY,
            },
            {
                "token": "ep_back",
                "timestamp": t_back,
                "translation": [10.0, 20.0, 0.0],
                "rotation": IDENTITY,
            },
            {
                "token": "ep_sweep",
                "timestamp": t_sweep,
                "translation": [11.0, 20.0, 0.0],
                "rotation": IDENTITY,
            },
            {
                "token": "ep2",
                "timestamp": t_2,
                "translation": [12.0, 20.0, 0.0],
                "rotation": YAW_90,
            },
            {
                "token": "ep_lidar",
                "timestamp": T0 + 35_000,
                "translation": [10.0, 20.0, 0.0],
                "rotation": IDENTITY,
            },
        ],
        # Keyframe 2 first: the reader orders by timestamp, not by table order.
        "sample_data": [
            camera_record("sd2", "s2", "ep2", "cs_front", "CAM_FRONT", t_2, key_frame=True),
            camera_record("sd1", "s1", "ep1", "cs_front", "CAM_FRONT", T0, key_frame=True),
            camera_record(
                "sweep", "s2", "ep_sweep", "cs_front", "CAM_FRONT", t_sweep, key_frame=False
            ),
            camera_record(
                "sd_back", "s1", "ep_back", "cs_back", "CAM_BACK", t_back, key_frame=True
            ),
            {
                "token": "sd_lidar",
                "sample_token": "s1",
                "ego_pose_token": "ep_lidar",
                "calibrated_sensor_token": "cs_lidar",
                "timestamp": T0 + 35_000,
                "fileformat": "pcd",
                "is_key_frame": True,
                "height": 0,
                "width": 0,
                "filename": f"samples/LIDAR_TOP/{LOG}__LIDAR_TOP__{T0 + 35_000}.pcd.bin",
                "prev": "",
                "next": "",
            },  # no such file: only cameras are read
        ],
        "category": [
            {"token": f"cat_{key}", "name": name, "description": ""} for key, name in INSTANCES
        ],
        "instance": [
            {
                "token": f"inst_{key}",
                "category_token": f"cat_{key}",
                "nbr_annotations": 1,
                "first_annotation_token": "",
                "last_annotation_token": "",
            }
            for key, _ in INSTANCES
        ],
        "sample_annotation": [
            # keyframe 1
            annotation("a_car1", "s1", "car", [21.0, 20.0, 1.5], [2.0, 4.0, 2.0], YAW_90),
            annotation("a_ped", "s1", "pedestrian", [15.5, 21.5, 1.5], [1.0, 1.0, 2.0]),
            annotation("a_truck", "s1", "truck", [1.0, 20.0, 1.5], [2.0, 4.0, 2.0]),
            annotation("a_bike", "s1", "bicycle", [16.0, 40.0, 1.5], [1.0, 2.0, 1.0]),
            annotation("a_bus", "s1", "bus", [14.0, 17.0, 1.5], [2.0, 2.0, 2.0]),
            annotation("a_barrier", "s1", "barrier", [12.0, 17.5, 1.5], [1.0, 4.0, 2.0]),
            # keyframe 2
            annotation("a_car2", "s2", "car", [12.0, 29.0, 1.5], [2.0, 4.0, 2.0]),
        ],
        "visibility": [{"token": "4", "level": "v80-100", "description": "visible"}],
        "attribute": [],
    }
    return tables


def camera_record(
    token: str,
    sample: str,
    pose: str,
    calibration: str,
    channel: str,
    timestamp: int,
    *,
    key_frame: bool,
) -> dict[str, Any]:
    """A camera's sample_data record (sweeps live under sweeps/, keyframes under samples/)."""
    folder = "samples" if key_frame else "sweeps"
    return {
        "token": token,
        "sample_token": sample,
        "ego_pose_token": pose,
        "calibrated_sensor_token": calibration,
        "timestamp": timestamp,
        "fileformat": "jpg",
        "is_key_frame": key_frame,
        "height": HEIGHT,
        "width": WIDTH,
        "filename": f"{folder}/{channel}/{image_name(channel, timestamp)}",
        "prev": "",
        "next": "",
    }


def annotation(
    token: str,
    sample: str,
    instance: str,
    center: list[float],
    size_wlh: list[float],
    rotation: list[float] = IDENTITY,
) -> dict[str, Any]:
    """A sample_annotation record: a 3D box in global coordinates."""
    return {
        "token": token,
        "sample_token": sample,
        "instance_token": f"inst_{instance}",
        "visibility_token": "4",
        "attribute_tokens": [],
        "translation": center,
        "size": size_wlh,
        "rotation": rotation,
        "prev": "",
        "next": "",
        "num_lidar_pts": 10,
        "num_radar_pts": 0,
    }


GREYS = {"sd1": GREY_1, "sd2": GREY_2, "sd_back": GREY_BACK, "sweep": GREY_SWEEP}


def write_dataset(
    root: Path, tables: dict[str, list[dict[str, Any]]], version: str = "v1.0-mini"
) -> Path:
    """Write ``tables`` and a grey JPEG per camera record (the sweep's too) under ``root``."""
    import cv2

    (root / version).mkdir(parents=True)
    for name, records in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(records, indent=1))
    for record in tables["sample_data"]:
        if record["fileformat"] == "jpg":
            path = root / record["filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            grey = GREYS.get(record["token"], 128)
            assert cv2.imwrite(str(path), np.full((HEIGHT, WIDTH, 3), grey, np.uint8))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataroot with v1.0-mini and its images."""
    return write_dataset(tmp_path / "nuscenes", official_tables())


def by_track(frame: LabelledFrame) -> dict[int | None, tuple[str, tuple[float, ...]]]:
    """A frame's boxes as track id -> (label, (x1, y1, x2, y2))."""
    out = {}
    for roi in frame.boxes:
        assert roi.track_id not in out, f"two boxes of track {roi.track_id}"
        out[roi.track_id] = (roi.label, (roi.box.x1, roi.box.y1, roi.box.x2, roi.box.y2))
    return out


def assert_boxes(frame: LabelledFrame, expected: dict[int, tuple[str, tuple[float, ...]]]) -> None:
    got = by_track(frame)
    assert sorted(got, key=str) == sorted(expected), frame.name
    for track, (label, box) in expected.items():
        assert got[track][0] == label, (frame.name, track)
        assert got[track][1] == pytest.approx(box, abs=0.5), (frame.name, track, label)


def test_camera_conventions_of_the_fixture() -> None:
    """The rotations the hand-worked numbers rest on: CAM_FRONT's camera z is the ego's x,
    CAM_BACK's is the ego's -x, and the 90 degree yaw turns ego x to world y."""
    front, back, yaw = (
        quaternion_matrix(q) for q in (CAM_FRONT_ROTATION, CAM_BACK_ROTATION, YAW_90)
    )
    assert front @ [0, 0, 1] == pytest.approx([1, 0, 0])
    assert front @ [1, 0, 0] == pytest.approx([0, -1, 0])  # image right = ego right
    assert front @ [0, 1, 0] == pytest.approx([0, 0, -1])  # image down = ego down
    assert back @ [0, 0, 1] == pytest.approx([-1, 0, 0])
    assert yaw @ [1, 0, 0] == pytest.approx([0, 1, 0])
    # a quaternion need not be of unit length
    assert quaternion_matrix([2.0, 0.0, 0.0, 0.0]) == pytest.approx(np.eye(3))


def test_cam_front_keyframes_in_time_order_with_the_projected_boxes(dataset: Path) -> None:
    frames = list(READERS["nuscenes"](dataset, vocabulary("nuscenes")))
    # the two keyframes, in timestamp order; the sweep between them is not one
    assert [f.name for f in frames] == [
        image_name("CAM_FRONT", T0),
        image_name("CAM_FRONT", T0 + 500_000),
    ]
    assert [f.stamp for f in frames] == [0, 500_000_000]  # ns from the first frame
    assert [f.camera for f in frames] == ["CAM_FRONT", "CAM_FRONT"]
    first, second = frames
    # vehicle.car, human.pedestrian.adult, vehicle.bus.rigid, movable_object.barrier; not
    # the truck behind the camera nor the bicycle beside the image
    assert first.labels == {"car", "pedestrian", "bus", "barrier"}
    assert_boxes(first, FRONT_1)
    assert second.labels == {"car"}
    assert_boxes(second, FRONT_2)
    assert all(roi.score == 1.0 for roi in first.boxes)
    # each frame loads its own image (RGB, full size)
    assert first.load().shape == (HEIGHT, WIDTH, 3)
    assert abs(int(first.load().mean()) - GREY_1) <= 2
    assert abs(int(second.load().mean()) - GREY_2) <= 2


def test_labels_and_boxes_are_mapped_into_the_task_vocabulary(dataset: Path) -> None:
    first = next(nuscenes_official(dataset, vocabulary("bdd100k")))
    assert first.labels == {"car", "pedestrian", "bus"}  # BDD100K has no barrier class
    assert {track: label for track, (label, _) in by_track(first).items()} == {
        CAR: "car",
        PEDESTRIAN: "pedestrian",
        BUS: "bus",
    }


def test_all_cameras_interleave_by_timestamp(dataset: Path) -> None:
    frames = list(nuscenes_official(dataset, vocabulary("nuscenes"), camera="all"))
    assert [(f.camera, f.stamp) for f in frames] == [
        ("CAM_FRONT", 0),
        ("CAM_BACK", 25_065_000),  # 25 065 µs after CAM_FRONT
        ("CAM_FRONT", 500_000_000),
    ]
    back = frames[1]
    assert back.name == image_name("CAM_BACK", T0 + 25_065)
    assert back.labels == {"truck"}
    assert_boxes(back, BACK_1)
    assert abs(int(back.load().mean()) - GREY_BACK) <= 2
    # the same sample's CAM_FRONT frame is unchanged by the other camera
    assert_boxes(frames[0], FRONT_1)
    back_only = list(nuscenes_official(dataset, vocabulary("nuscenes"), camera="CAM_BACK"))
    assert [(f.name, f.stamp) for f in back_only] == [(back.name, 0)]


def test_scenes_follow_one_another_a_second_apart(tmp_path: Path) -> None:
    """A second recording days later starts 1 s after the first one's last frame."""
    tables = official_tables()
    later = T0 + 3 * 86_400 * 1_000_000
    tables["scene"].append(dict(tables["scene"][0], token="scene2", name="scene-0002"))
    tables["sample"].append(
        {"token": "s3", "timestamp": later, "prev": "", "next": "", "scene_token": "scene2"}
    )
    tables["sample_data"].append(
        camera_record("sd3", "s3", "ep1", "cs_front", "CAM_FRONT", later, key_frame=True)
    )
    root = write_dataset(tmp_path / "nuscenes", tables)
    frames = list(nuscenes_official(root, vocabulary("nuscenes")))
    assert [f.stamp for f in frames] == [0, 500_000_000, 500_000_000 + NS_PER_S]
    assert frames[2].labels == frozenset()  # labelled, but nothing annotated in s3


def test_without_annotations_the_frames_are_unlabelled(tmp_path: Path) -> None:
    """v1.0-test ships an empty annotation table: no ground truth, not 'nothing there'."""
    tables = official_tables()
    tables["sample_annotation"] = []
    root = write_dataset(tmp_path / "nuscenes", tables, version="v1.0-test")
    frames = list(nuscenes_official(root, vocabulary("nuscenes")))
    assert len(frames) == 2
    assert all(f.labels is None and f.boxes == () for f in frames)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "sample_annotation",
            "v1.0-mini/sample_annotation.json not found: the nuScenes annotation table (3D boxes",
        ),
        ("ego_pose", "v1.0-mini/ego_pose.json not found: the vehicle's ego -> global pose"),
        ("calibrated_sensor", "v1.0-mini/calibrated_sensor.json not found: the cameras'"),
    ],
)
def test_a_missing_table_is_named_with_what_it_holds(
    dataset: Path, table: str, message: str
) -> None:
    (dataset / "v1.0-mini" / f"{table}.json").unlink()
    with pytest.raises(DatasetError) as error:
        nuscenes_official(dataset, vocabulary("nuscenes"))
    assert message in str(error.value)


def test_every_missing_table_is_named_at_once(dataset: Path) -> None:
    for table in ("sample_data", "instance"):
        (dataset / "v1.0-mini" / f"{table}.json").unlink()
    with pytest.raises(DatasetError, match=r"sample_data\.json not found.*instance\.json not"):
        nuscenes_official(dataset, vocabulary("nuscenes"))


def test_a_malformed_table_is_named(dataset: Path) -> None:
    (dataset / "v1.0-mini" / "sample.json").write_text('[{"token": "s1", ')
    with pytest.raises(DatasetError, match=r"v1\.0-mini/sample\.json is not valid JSON"):
        nuscenes_official(dataset, vocabulary("nuscenes"))
    (dataset / "v1.0-mini" / "sample.json").write_text('{"token": "s1"}')
    with pytest.raises(DatasetError, match=r"sample\.json is not a list of records"):
        nuscenes_official(dataset, vocabulary("nuscenes"))


def test_a_broken_reference_is_named(dataset: Path) -> None:
    tables = official_tables()
    tables["sample_annotation"][0]["instance_token"] = "no_such_instance"
    (dataset / "v1.0-mini" / "sample_annotation.json").write_text(
        json.dumps(tables["sample_annotation"])
    )
    with pytest.raises(DatasetError, match="sample_annotation a_car1 names instance"):
        nuscenes_official(dataset, vocabulary("nuscenes"))


def test_a_malformed_box_is_named_when_its_frame_is_read(dataset: Path) -> None:
    tables = official_tables()
    tables["sample_annotation"][-1]["size"] = [2.0, 4.0]  # keyframe 2's car
    (dataset / "v1.0-mini" / "sample_annotation.json").write_text(
        json.dumps(tables["sample_annotation"])
    )
    frames = nuscenes_official(dataset, vocabulary("nuscenes"))
    assert next(frames).labels == {"car", "pedestrian", "bus", "barrier"}
    with pytest.raises(DatasetError, match=r"record a_car2: size should be 3 numbers"):
        next(frames)


def test_a_missing_image_is_named_unless_images_are_optional(dataset: Path) -> None:
    missing = dataset / "samples" / "CAM_FRONT" / image_name("CAM_FRONT", T0)
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{missing} not found")) as error:
        nuscenes_official(dataset, vocabulary("nuscenes"))
    assert "1 of 2 keyframe images are missing" in str(error.value)
    frames = list(nuscenes_official(dataset, vocabulary("nuscenes"), require_images=False))
    assert [(f.name, f.stamp, f.labels) for f in frames] == [
        (image_name("CAM_FRONT", T0 + 500_000), 0, {"car"})
    ]


def test_an_unknown_camera_lists_the_cameras(dataset: Path) -> None:
    with pytest.raises(DatasetError, match=r"no camera 'CAM_SIDE'.*CAM_BACK, CAM_FRONT"):
        nuscenes_official(dataset, vocabulary("nuscenes"), camera="CAM_SIDE")


def test_the_version_folder(tmp_path: Path, dataset: Path) -> None:
    assert find_version(dataset) == dataset / "v1.0-mini"
    with pytest.raises(DatasetError, match="no nuScenes version folder"):
        find_version(tmp_path / "nuscenes" / "samples")
    shutil.copytree(dataset / "v1.0-mini", dataset / "v1.0-trainval")
    with pytest.raises(
        DatasetError, match=r"several nuScenes versions.*v1\.0-mini, v1\.0-trainval"
    ):
        find_version(dataset)
    # the version folder itself chooses one; its images are under the folder above
    assert find_version(dataset / "v1.0-trainval") == dataset / "v1.0-trainval"
    assert find_version(dataset, "v1.0-mini") == dataset / "v1.0-mini"
    frames = list(nuscenes_official(dataset / "v1.0-trainval", vocabulary("nuscenes")))
    assert len(frames) == 2
    assert abs(int(frames[1].load().mean()) - GREY_2) <= 2


def test_the_shared_mini_extract_lacks_the_annotation_table() -> None:
    if not (SHARED_NUSCENES / "v1.0-mini").is_dir():
        pytest.skip(f"no nuScenes extract at {SHARED_NUSCENES}")
    with pytest.raises(DatasetError, match=r"v1\.0-mini/sample_annotation\.json not found") as e:
        nuscenes_official(SHARED_NUSCENES, vocabulary("nuscenes"))
    assert "read it as kind nuscenes-labels" in str(e.value)  # what it does hold


# --- spotvlm-make-bag ---------------------------------------------------------------------


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(stamp, message)] of a bag."""
    from rosbags.rosbag2 import Reader

    from spotvlm_ros.data.bag import typestore

    store = typestore()
    out: dict[str, list[tuple[int, Any]]] = {}
    with Reader(path) as reader:
        for connection, stamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append(
                (stamp, store.deserialize_cdr(raw, connection.msgtype))
            )
    return out


def test_make_bag_writes_the_cam_front_keyframes_with_their_ground_truth(
    dataset: Path, tmp_path: Path
) -> None:
    from spotvlm_ros.data.bag import CAMERA_TOPIC, TRUTH_TOPIC, bag_frames, main

    out = tmp_path / "bag"
    assert main(["nuscenes", str(dataset), str(out), "--vocabulary", "nuscenes"]) == 0
    frames = bag_frames(out, vocabulary("nuscenes"))
    assert [(f.stamp, f.labels) for f in frames] == [
        (0, {"car", "pedestrian", "bus", "barrier"}),
        (500_000_000, {"car"}),
    ]
    assert abs(int(frames[0].load().mean()) - GREY_1) <= 2
    topics = read_bag(out)
    assert set(topics) == {CAMERA_TOPIC, TRUTH_TOPIC}
    truth = topics[TRUTH_TOPIC][0][1]
    # the boxes as whole pixels (RegionOfInterest), with their track ids
    rois = {
        r.track_id: (r.label, r.box.x_offset, r.box.y_offset, r.box.width, r.box.height)
        for r in truth.boxes
    }
    assert rois == {
        CAR: ("car", 137, 108, 182 - 137, 131 - 108),
        PEDESTRIAN: ("pedestrian", 110, 95, 30, 50),
        BUS: ("bus", 210, 70, 110, 100),
        BARRIER: ("barrier", 226, 86, 260 - 226, 153 - 86),
    }


def test_make_bag_all_cameras_puts_each_camera_in_its_namespace(
    dataset: Path, tmp_path: Path
) -> None:
    from spotvlm_ros.data.bag import main

    out = tmp_path / "bag"
    assert main(["nuscenes", str(dataset), str(out), "--camera", "all", "--compressed"]) == 0
    topics = read_bag(out)
    assert {topic: len(messages) for topic, messages in topics.items()} == {
        "/cam_front/camera/image_raw/compressed": 2,
        "/cam_front/spotvlm/ground_truth": 2,
        "/cam_back/camera/image_raw/compressed": 1,
        "/cam_back/spotvlm/ground_truth": 1,
    }
    ((_, back_image),) = topics["/cam_back/camera/image_raw/compressed"]
    ((_, back_truth),) = topics["/cam_back/spotvlm/ground_truth"]
    assert back_image.header.frame_id == "cam_back"
    assert back_image.header.stamp == back_truth.header.stamp
    assert list(back_truth.labels) == ["truck"]  # bdd100k vocabulary by default
    assert [s for s, _ in topics["/cam_front/camera/image_raw/compressed"]] == [
        s for s, _ in topics["/cam_front/spotvlm/ground_truth"]
    ]


def test_make_bag_one_other_camera_keeps_the_default_topics(dataset: Path, tmp_path: Path) -> None:
    from spotvlm_ros.data.bag import CAMERA_TOPIC, TRUTH_TOPIC, main

    out = tmp_path / "bag"
    assert main(["nuscenes", str(dataset), str(out), "--camera", "cam_back"]) == 0
    topics = read_bag(out)
    assert set(topics) == {CAMERA_TOPIC, TRUTH_TOPIC}
    assert list(topics[TRUTH_TOPIC][0][1].labels) == ["truck"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nuscenes", "DATA", "OUT", "--camera", "CAM_SIDE"], "no camera 'CAM_SIDE'"),
        (["nuscenes", "DATA/samples", "OUT"], "no nuScenes version folder"),
        (["nuscenes-labels", "DATA", "OUT"], "cam_front_labels_mini_val.json"),
        (["nuscenes-labels", "DATA", "OUT", "--camera", "all"], "--camera is only for kind"),
        (["folder", "DATA/samples/CAM_FRONT", "OUT", "--camera", "all"], "only for kind"),
    ],
)
def test_make_bag_bad_input_is_one_line_and_writes_nothing(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    from spotvlm_ros.data.bag import main

    out = tmp_path / "bag"
    args = [a.replace("DATA", str(dataset)).replace("OUT", str(out)) for a in args]
    assert main(args) == 2
    # the last line (after any progress bar of a reader that fails lazily) is the error
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("spotvlm-make-bag: error: ")
    assert message in last
    assert not out.exists()  # nothing half-written that would block a corrected rerun


def _flat(points: list[tuple[float, float]]) -> np.ndarray:
    """Camera-frame corners at depth 1: with the identity as camera matrix, corner (x, y)
    projects to pixel (x, y)."""
    return np.array([[x for x, _ in points], [y for _, y in points], [1.0] * len(points)])


def test_a_box_across_a_corner_of_the_image_is_cut_as_the_devkit_cuts_it() -> None:
    from spotvlm_ros.core.types import Box
    from spotvlm_ros.data.nuscenes import project_box

    # A thin strip between the lines x + y = 5 and x + y = 9, from (-20, 25) to (27, -18):
    # it crosses the top-left corner of a 100 x 100 image. Worked out by hand: its part in
    # the image is the trapezoid (5, 0), (9, 0), (0, 9), (0, 5), whose bounding box is
    # (0, 0, 9, 9). The corners' bounding rectangle cut to the image would be (0, 0, 27, 27).
    strip = _flat([(-20, 25), (25, -20), (27, -18), (-18, 27)])
    assert project_box(strip, np.eye(3), 100, 100) == Box(0.0, 0.0, 9.0, 9.0)
    # the same strip across the bottom-right corner (x + y = 191 .. 195)
    mirrored = _flat([(100 - x, 100 - y) for x, y in [(-20, 25), (25, -20), (27, -18), (-18, 27)]])
    assert project_box(mirrored, np.eye(3), 100, 100) == Box(91.0, 91.0, 100.0, 100.0)


def test_boxes_inside_beside_and_behind_the_image() -> None:
    from spotvlm_ros.core.types import Box
    from spotvlm_ros.data.nuscenes import project_box

    inside = _flat([(10, 20), (40, 20), (40, 60), (10, 60)])
    assert project_box(inside, np.eye(3), 100, 100) == Box(10.0, 20.0, 40.0, 60.0)
    beside = _flat([(110, 20), (140, 20), (140, 60), (110, 60)])
    assert project_box(beside, np.eye(3), 100, 100) is None
    # a rectangle across the left border: cut at x = 0, as before
    across = _flat([(-30, 20), (40, 20), (40, 60), (-30, 60)])
    assert project_box(across, np.eye(3), 100, 100) == Box(0.0, 20.0, 40.0, 60.0)
    # corners behind the camera (depth <= 0) are left out, as the devkit does
    behind = np.concatenate([inside, [[50.0], [50.0], [-1.0]]], axis=1)
    assert project_box(behind, np.eye(3), 100, 100) == Box(10.0, 20.0, 40.0, 60.0)
    assert project_box(inside * [[1], [1], [-1]], np.eye(3), 100, 100) is None
