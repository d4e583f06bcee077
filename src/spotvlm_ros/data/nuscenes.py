"""nuScenes in the official layout a user downloads, read without the devkit (no ROS).

A dataroot holds a version folder (``v1.0-mini``, ``v1.0-trainval`` or ``v1.0-test``) of
JSON tables and the camera images under ``samples/CAM_*/``. Every camera keyframe becomes a
LabelledFrame whose ground truth are the sample's 3D box annotations projected into that
camera, the way the devkit's ``export_2d_annotations_as_json`` script does it:

* a box (global frame: center, size ``[width, length, height]``, rotation ``[w, x, y, z]``,
  its x axis along the length) gives 8 corners;
* the ego pose of the image (ego -> global) and the camera's calibration (camera -> ego)
  are undone to bring the corners into the camera frame (z forward, x right, y down);
* the corners in front of the camera (depth > 0) are projected with the camera matrix;
  the 2D box is the bounding rectangle of the intersection of their convex hull with the
  image (the devkit's ``post_process_coords``), and the object counts as visible (any
  visibility level) if that rectangle is at least a pixel wide and high.

Category names (``vehicle.bus.rigid``, ``human.pedestrian.child``, ...) are reduced to the
nuScenes detection classes (bus, pedestrian, ...) before they are mapped into the task
vocabulary; the track id of a box is the index of its instance in ``instance.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spotvlm_ros.core.types import NS_PER_S, Box, Roi
from spotvlm_ros.core.vocab import Vocabulary
from spotvlm_ros.data.frames import DatasetError, LabelledFrame, read_rgb

VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
DEFAULT_CAMERA = "CAM_FRONT"
ALL_CAMERAS = "all"
MIN_DEPTH_M = 0.0  # corners on or behind the camera plane are not projected (the devkit's)
MIN_BOX_PX = 1.0  # narrower or lower 2D boxes are dropped
NS_PER_US = 1_000

# The tables the reader needs, each with what it holds (for the error messages).
TABLES: dict[str, str] = {
    "sample": "the keyframes (one sample every 0.5 s) and their scenes",
    "sample_data": "the sensor readings (image file, timestamp, ego pose, calibration)",
    "sample_annotation": "the nuScenes annotation table (3D boxes in global coordinates)",
    "instance": "the annotated objects: the category and track of every 3D box",
    "category": "the category names (vehicle.car, human.pedestrian.adult, ...)",
    "calibrated_sensor": "the cameras' intrinsics and camera -> ego poses",
    "ego_pose": "the vehicle's ego -> global pose at every sensor reading",
    "sensor": "the sensor channels (CAM_FRONT, ...) and modalities",
}

# nuScenes category -> detection class, as the devkit's detection benchmark maps them; other
# categories (animal, debris, stroller, ...) keep their own name, which most vocabularies
# do not know.
DETECTION_CLASSES: dict[str, str] = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.trailer": "trailer",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "movable_object.barrier": "barrier",
}

Record = dict[str, Any]


@dataclass(frozen=True)
class Tables:
    """The tables of one nuScenes version folder, each indexed by token."""

    directory: Path  # the version folder; image paths are relative to its parent
    sample: dict[str, Record]
    sample_data: dict[str, Record]
    sample_annotation: dict[str, Record]
    instance: dict[str, Record]
    category: dict[str, Record]
    calibrated_sensor: dict[str, Record]
    ego_pose: dict[str, Record]
    sensor: dict[str, Record]

    @property
    def dataroot(self) -> Path:
        """The folder that image file names are relative to."""
        return self.directory.parent


def find_version(root: Path, version: str | None = None) -> Path:
    """The version folder of the dataroot ``root`` (``root/v1.0-mini``, ...).

    ``root`` may also be a version folder itself, which is how a dataroot holding several
    versions is narrowed down to one; ``version`` names one explicitly.
    """
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder (expected a nuScenes dataroot)")
    if version is not None:
        chosen = root / version
        if not chosen.is_dir():
            raise DatasetError(f"{chosen} not found: no nuScenes version {version!r} in {root}")
        return chosen
    if root.name in VERSIONS and (root / "sample.json").is_file():
        return root
    found = [root / name for name in VERSIONS if (root / name).is_dir()]
    if not found:
        raise DatasetError(
            f"no nuScenes version folder ({', '.join(VERSIONS)}) in {root}: expected the "
            f"official layout, e.g. {root / VERSIONS[0] / 'sample.json'} and {root / 'samples'}"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            f"several nuScenes versions in {root} ({names}): pass the version folder itself, "
            f"e.g. {found[0]}, to choose one"
        )
    return found[0]


def _table(directory: Path, name: str) -> list[Record]:
    path = directory / f"{name}.json"
    what = f"{directory.name}/{name}.json"
    try:
        with path.open(encoding="utf-8") as stream:
            records = json.load(stream)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{what} is not valid JSON ({exc}): expected {TABLES[name]} (in {directory})"
        ) from exc
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and isinstance(r.get("token"), str) for r in records
    ):
        raise DatasetError(
            f"{what} is not a list of records with a 'token': expected {TABLES[name]} "
            f"(in {directory})"
        )
    return records


def load_tables(version_dir: Path) -> Tables:
    """The tables the reader needs from a version folder, indexed by token.

    Every missing table is named in one DatasetError, with what it holds.
    """
    missing = [name for name in TABLES if not (version_dir / f"{name}.json").is_file()]
    if missing:
        lines = "; ".join(
            f"{version_dir.name}/{name}.json not found: {TABLES[name]}" for name in missing
        )
        # The shared extract holds the project's derived labels instead of these tables.
        derived = version_dir.parent / "cam_front_labels_mini_val.json"
        hint = (
            f"; {derived.name} is there: read it as kind nuscenes-labels"
            if derived.is_file()
            else ""
        )
        raise DatasetError(
            f"{lines} (in {version_dir}; the nuScenes metadata download has every table{hint})"
        )
    indexed = {name: {r["token"]: r for r in _table(version_dir, name)} for name in TABLES}
    return Tables(directory=version_dir, **indexed)


def _field(record: Record, key: str, table: str) -> Any:
    try:
        return record[key]
    except KeyError:
        raise DatasetError(
            f"{table}.json: record {record.get('token', '?')} has no {key!r}"
        ) from None


def _numbers(record: Record, key: str, table: str, shape: tuple[int, ...]) -> np.ndarray:
    value = _field(record, key, table)
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise DatasetError(
            f"{table}.json: record {record['token']}: {key} should be {' x '.join(map(str, shape))}"
            f" numbers, got {value!r}"
        )
    return array


def _lookup(index: dict[str, Record], token: Any, table: str, referrer: str) -> Record:
    try:
        return index[token]
    except (KeyError, TypeError):
        raise DatasetError(
            f"{referrer} names {table} {token!r}, which is not in {table}.json"
        ) from None


def quaternion_matrix(quaternion: Sequence[float] | np.ndarray) -> np.ndarray:
    """The 3x3 rotation matrix of a quaternion given as ``[w, x, y, z]`` (nuScenes order);
    the quaternion need not be of unit length."""
    q = np.asarray(quaternion, dtype=float)
    norm = float(np.linalg.norm(q))
    if q.shape != (4,) or norm == 0.0:
        raise ValueError(f"not a rotation quaternion [w, x, y, z]: {list(q.ravel())}")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def box_corners(
    center: Sequence[float] | np.ndarray,
    size_wlh: Sequence[float] | np.ndarray,
    rotation: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """The 8 corners (3 x 8) of a box of ``size_wlh`` = [width, length, height] whose x
    axis (the length) is turned by ``rotation`` [w, x, y, z], around ``center``."""
    width, length, height = np.asarray(size_wlh, dtype=float)
    signs = np.array(
        [
            [1, 1, 1, 1, -1, -1, -1, -1],  # along the length (x)
            [1, -1, -1, 1, 1, -1, -1, 1],  # along the width (y)
            [1, 1, -1, -1, 1, 1, -1, -1],  # along the height (z)
        ],
        dtype=float,
    )
    local = signs * (np.array([length, width, height]) / 2)[:, None]
    corners: np.ndarray = quaternion_matrix(rotation) @ local + np.asarray(center, float)[:, None]
    return corners


def into_frame(
    points: np.ndarray,
    translation: Sequence[float] | np.ndarray,
    rotation: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Points (3 x N) given in a parent frame, expressed in the child frame whose pose in the
    parent is ``translation`` and ``rotation`` [w, x, y, z] (the inverse of that pose)."""
    offset = points - np.asarray(translation, dtype=float)[:, None]
    child: np.ndarray = quaternion_matrix(rotation).T @ offset  # a rotation's inverse: .T
    return child


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull (K x 2, counter-clockwise, no repeated point) of points (N x 2), by
    Andrew's monotone chain."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    if len(pts) <= 2:
        return np.array(pts, dtype=float).reshape(-1, 2)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for point in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    for point in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    return np.array(lower[:-1] + upper[:-1], dtype=float)


def clip_to_rectangle(polygon: np.ndarray, width: float, height: float) -> np.ndarray:
    """A convex polygon (K x 2) cut to the rectangle [0, width] x [0, height]
    (Sutherland-Hodgman: one half-plane after another); empty (0 x 2) if they do not meet."""
    # each border: (axis, value, side): a point q is inside when side * (q[axis] - value) >= 0
    borders = ((0, 0.0, 1.0), (0, width, -1.0), (1, 0.0, 1.0), (1, height, -1.0))
    points = [tuple(map(float, q)) for q in polygon]
    for axis, value, side in borders:
        kept: list[tuple[float, ...]] = []
        for k, current in enumerate(points):
            previous = points[k - 1]
            was_in = side * (previous[axis] - value) >= 0
            is_in = side * (current[axis] - value) >= 0
            if was_in != is_in:  # the edge crosses the border: add the crossing
                t = (value - previous[axis]) / (current[axis] - previous[axis])
                kept.append(tuple(p + t * (c - p) for p, c in zip(previous, current, strict=True)))
            if is_in:
                kept.append(current)
        points = kept
    return np.array(points, dtype=float).reshape(-1, 2)


def project_box(
    corners_camera: np.ndarray, intrinsic: np.ndarray, width: float, height: float
) -> Box | None:
    """The 2D box of 3D corners (3 x N, camera frame) in a ``width`` x ``height`` image, or
    None when no corner is in front of the camera or the box misses the image.

    As the devkit's export script (``export_2d_annotations_as_json``, its
    ``post_process_coords``) makes it: the corners in front of the camera (depth > 0) are
    projected, and the box is the bounding rectangle of the intersection of their convex
    hull with the image. Where the hull lies slanted across the image's border, this is
    smaller than the bounding rectangle of the corners cut to the image.
    """
    in_front = corners_camera[:, corners_camera[2] > MIN_DEPTH_M]
    if in_front.shape[1] == 0:
        return None
    homogeneous = np.asarray(intrinsic, dtype=float) @ in_front
    projected = np.stack([homogeneous[0] / homogeneous[2], homogeneous[1] / homogeneous[2]], 1)
    inside = clip_to_rectangle(convex_hull(projected), float(width), float(height))
    if len(inside) == 0:
        return None
    box = Box(
        float(inside[:, 0].min()),
        float(inside[:, 1].min()),
        float(inside[:, 0].max()),
        float(inside[:, 1].max()),
    )
    return None if box.is_degenerate(MIN_BOX_PX) else box


def detection_class(category: str) -> str:
    """The nuScenes detection class of a category name (``vehicle.bus.rigid`` -> ``bus``);
    a category outside the detection classes keeps its name."""
    return DETECTION_CLASSES.get(category, category)


@dataclass(frozen=True)
class _Keyframe:
    token: str
    record: Record
    channel: str
    timestamp_us: int
    scene: str
    path: Path


@dataclass(frozen=True)
class _Annotation:
    record: Record
    category: str  # the full nuScenes category name
    track_id: int

    def corners(self) -> np.ndarray:
        """The box's corners (3 x 8) in the global frame."""
        return box_corners(
            _numbers(self.record, "translation", "sample_annotation", (3,)),
            _numbers(self.record, "size", "sample_annotation", (3,)),
            _quaternion(self.record, "sample_annotation"),
        )


def _camera_channels(tables: Tables) -> dict[str, str]:
    """calibrated_sensor token -> channel, for the cameras."""
    channels = {}
    for token, calibration in tables.calibrated_sensor.items():
        sensor = _lookup(
            tables.sensor,
            _field(calibration, "sensor_token", "calibrated_sensor"),
            "sensor",
            f"calibrated_sensor {token}",
        )
        channel = str(_field(sensor, "channel", "sensor"))
        # Older exports lack the modality; nuScenes names every camera CAM_*.
        if sensor.get("modality", "camera" if channel.startswith("CAM_") else "") == "camera":
            channels[token] = channel
    return channels


def _keyframes(tables: Tables, camera: str, require_images: bool) -> list[_Keyframe]:
    channels = _camera_channels(tables)
    known = sorted(set(channels.values()))
    if camera == ALL_CAMERAS:
        wanted = set(known)
    elif camera in known:
        wanted = {camera}
    else:
        raise DatasetError(
            f"no camera {camera!r} in {tables.directory.name}/sensor.json "
            f"(cameras: {', '.join(known) or 'none'}; or {ALL_CAMERAS!r})"
        )
    frames = []
    for token, record in tables.sample_data.items():
        channel = channels.get(record.get("calibrated_sensor_token", ""))
        if channel not in wanted or not _field(record, "is_key_frame", "sample_data"):
            continue
        sample = _lookup(
            tables.sample,
            _field(record, "sample_token", "sample_data"),
            "sample",
            f"sample_data {token}",
        )
        frames.append(
            _Keyframe(
                token,
                record,
                str(channel),
                int(_field(record, "timestamp", "sample_data")),
                str(sample.get("scene_token", "")),
                tables.dataroot / str(_field(record, "filename", "sample_data")),
            )
        )
    if not frames:
        raise DatasetError(
            f"no {camera if camera != ALL_CAMERAS else 'camera'} keyframes in "
            f"{tables.directory.name}/sample_data.json ({tables.directory})"
        )
    present = [f for f in frames if f.path.is_file()]
    if require_images and len(present) < len(frames):
        missing = next(f for f in frames if not f.path.is_file())
        raise DatasetError(
            f"{missing.path} not found: the {missing.channel} image of keyframe {missing.token} "
            f"in {tables.directory.name}/sample_data.json ({len(frames) - len(present)} of "
            f"{len(frames)} keyframe images are missing; is the download complete?)"
        )
    if not present:
        raise DatasetError(
            f"none of the {len(frames)} keyframe images exist under {tables.dataroot / 'samples'}"
        )
    return present


def _annotations(tables: Tables) -> dict[str, list[_Annotation]]:
    """sample token -> its annotations, in table order (their boxes are read when a frame
    of their sample is: the full dataset holds over a million)."""
    track_ids = {token: i for i, token in enumerate(tables.instance)}
    by_sample: dict[str, list[_Annotation]] = {}
    for token, record in tables.sample_annotation.items():
        referrer = f"sample_annotation {token}"
        instance_token = _field(record, "instance_token", "sample_annotation")
        instance = _lookup(tables.instance, instance_token, "instance", referrer)
        category = _lookup(
            tables.category,
            _field(instance, "category_token", "instance"),
            "category",
            f"instance {instance_token}",
        )
        by_sample.setdefault(str(_field(record, "sample_token", "sample_annotation")), []).append(
            _Annotation(
                record, str(_field(category, "name", "category")), track_ids[instance_token]
            )
        )
    return by_sample


def _quaternion(record: Record, table: str) -> np.ndarray:
    quaternion = _numbers(record, "rotation", table, (4,))
    if not np.any(quaternion):
        raise DatasetError(f"{table}.json: record {record['token']}: rotation is all zeros")
    return quaternion


def _ground_truth(
    tables: Tables, frame: _Keyframe, annotations: list[_Annotation], vocab: Vocabulary
) -> tuple[frozenset[str], tuple[Roi, ...]]:
    referrer = f"sample_data {frame.token}"
    calibration = _lookup(
        tables.calibrated_sensor,
        frame.record["calibrated_sensor_token"],
        "calibrated_sensor",
        referrer,
    )
    pose = _lookup(
        tables.ego_pose, _field(frame.record, "ego_pose_token", "sample_data"), "ego_pose", referrer
    )
    intrinsic = _numbers(calibration, "camera_intrinsic", "calibrated_sensor", (3, 3))
    pose_t = _numbers(pose, "translation", "ego_pose", (3,))
    pose_q = _quaternion(pose, "ego_pose")
    camera_t = _numbers(calibration, "translation", "calibrated_sensor", (3,))
    camera_q = _quaternion(calibration, "calibrated_sensor")
    width = float(_field(frame.record, "width", "sample_data"))
    height = float(_field(frame.record, "height", "sample_data"))
    visible: list[str] = []
    rois: list[Roi] = []
    for annotation in annotations:
        ego = into_frame(annotation.corners(), pose_t, pose_q)  # global -> ego
        camera = into_frame(ego, camera_t, camera_q)  # ego -> camera
        box = project_box(camera, intrinsic, width, height)
        if box is None:
            continue
        word = detection_class(annotation.category)
        visible.append(word)
        rois.extend(
            Roi(label, box, 1.0, annotation.track_id) for label in sorted(vocab.normalize(word))
        )
    return vocab.normalize_all(visible), tuple(rois)


def _timeline(frames: list[_Keyframe], scene_gap_s: float) -> list[tuple[int, _Keyframe]]:
    """Stamps (ns): a scene's own timing from 0, the scenes one after another (in the order
    they were recorded) ``scene_gap_s`` apart, so that a bag never waits for the days that
    lie between two recordings."""
    by_scene: dict[str, list[_Keyframe]] = {}
    for frame in sorted(frames, key=lambda f: (f.timestamp_us, f.channel)):
        by_scene.setdefault(frame.scene, []).append(frame)
    timeline = []
    offset = 0
    for scene in by_scene.values():  # insertion order: by each scene's first frame
        start = scene[0].timestamp_us
        for frame in scene:
            timeline.append((offset + (frame.timestamp_us - start) * NS_PER_US, frame))
        offset = timeline[-1][0] + round(scene_gap_s * NS_PER_S)
    return timeline


def nuscenes_official(
    root: Path,
    vocab: Vocabulary,
    camera: str = DEFAULT_CAMERA,
    *,
    require_images: bool = True,
    version: str | None = None,
    scene_gap_s: float = 1.0,
) -> Iterator[LabelledFrame]:
    """The camera keyframes of a nuScenes download, in time order, with their 3D box
    annotations projected into the image as ground truth.

    ``root`` is the dataroot (or one of its version folders); ``camera`` a channel such as
    CAM_FRONT or ``"all"`` for every camera (frames carry their channel in ``camera``).
    Stamps are ns from the first frame; scenes follow one another ``scene_gap_s`` apart. A
    missing image is a DatasetError unless ``require_images`` is False, which skips it.
    The tables are read and the images checked at once; the projection happens frame by
    frame as the iterator is consumed. Without annotations (v1.0-test) frames are unlabelled.
    """
    tables = load_tables(find_version(root, version))
    frames = _keyframes(tables, camera, require_images)
    annotations = _annotations(tables)
    labelled = bool(tables.sample_annotation)
    timeline = _timeline(frames, scene_gap_s)

    def generate() -> Iterator[LabelledFrame]:
        for stamp, frame in timeline:
            labels: frozenset[str] | None = None
            rois: tuple[Roi, ...] = ()
            if labelled:
                sample_annotations = annotations.get(frame.record["sample_token"], [])
                labels, rois = _ground_truth(tables, frame, sample_annotations, vocab)
            yield LabelledFrame(
                frame.path.name, stamp, read_rgb(frame.path), labels, rois, camera=frame.channel
            )

    return generate()
