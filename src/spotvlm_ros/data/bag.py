"""Write labelled sequences as rosbag2 bags with the `rosbags` library, and the
`spotvlm-make-bag` command.

A bag holds the camera frames (``/camera/image_raw`` as sensor_msgs/Image bgr8, or
``.../compressed`` JPEG) and the ground truth (``/spotvlm/ground_truth``,
spotvlm_msgs/GroundTruth) with the same stamps. A bag of several nuScenes cameras
(``--camera all``) puts each camera in its own namespace: ``/cam_front/camera/image_raw``,
``/cam_front/spotvlm/ground_truth``, ... It plays with `ros2 bag play` and with the
package's bag_player.

    spotvlm-make-bag camvid ../shared/data/camvid_seq05vd rosbags/camvid --limit 30
    spotvlm-make-bag nuscenes /data/sets/nuscenes rosbags/nuscenes --camera all
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spotvlm_ros.core.task import TASKS, task
from spotvlm_ros.core.types import NS_PER_S
from spotvlm_ros.data.frames import DatasetError, LabelledFrame
from spotvlm_ros.data.nuscenes import ALL_CAMERAS, DEFAULT_CAMERA
from spotvlm_ros.data.readers import READERS, TASK_OF, VOCABULARY_OF
from spotvlm_ros.imaging import swap_red_blue

CAMERA_TOPIC = "/camera/image_raw"
CAMERA_KIND = "nuscenes"  # the one kind with several cameras (--camera)
TRUTH_TOPIC = "/spotvlm/ground_truth"
BAG_EPOCH_NS = 1_700_000_000 * NS_PER_S  # bags start at a fixed, recognisable time
MSG_TYPES = ("Roi", "GroundTruth")


def _msg_dir() -> Path:
    """spotvlm_msgs' .msg files: installed share folder, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("spotvlm_msgs")) / "msg"
        if share.is_dir():
            return share
    except (ImportError, LookupError, ValueError):
        pass
    return Path(__file__).resolve().parents[2] / "spotvlm_msgs" / "msg"


def typestore() -> Any:
    """ROS 2 Kilted's types plus spotvlm_msgs' Roi and GroundTruth."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name in MSG_TYPES:
        text = (_msg_dir() / f"{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"spotvlm_msgs/msg/{name}"))
    store.register(types)
    return store


def write_bag(
    frames: Iterable[LabelledFrame],
    out: Path,
    *,
    task: str,
    compressed: bool = False,
    storage: str = "sqlite3",
    overwrite: bool = False,
    progress: bool = True,
    camera_namespaces: bool = False,
) -> int:
    """Write ``frames`` into a new bag folder ``out``; returns the number of frames.

    With ``camera_namespaces``, a frame of a named camera (``frame.camera``, e.g. CAM_BACK)
    goes on ``/cam_back/camera/image_raw`` and its ground truth on
    ``/cam_back/spotvlm/ground_truth``; without, every frame is on the default topics.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    if out.exists():
        if not overwrite:
            raise DatasetError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    t = store.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topic = f"{CAMERA_TOPIC}/compressed" if compressed else CAMERA_TOPIC
    count = 0
    iterator: Iterator[LabelledFrame] | Any = iter(frames)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"writing {out.name}", unit="frame")
    # A bag cut short by bad input is removed: it would only block the corrected rerun.
    try:
        with Writer(out, version=9, storage_plugin=plugin) as writer:
            # namespace ("" or "/cam_front") -> (camera, ground truth) connections, made when
            # a camera's first frame comes (a bag holds only the cameras it has frames of)
            connections: dict[str, tuple[Any, Any]] = {}

            def connections_of(namespace: str) -> tuple[Any, Any]:
                if namespace not in connections:
                    connections[namespace] = (
                        writer.add_connection(namespace + topic, image_type, typestore=store),
                        writer.add_connection(
                            namespace + TRUTH_TOPIC, "spotvlm_msgs/msg/GroundTruth", typestore=store
                        ),
                    )
                return connections[namespace]

            if not camera_namespaces:
                connections_of("")
            for frame in iterator:
                namespace = f"/{frame.camera.lower()}" if camera_namespaces and frame.camera else ""
                camera, truth = connections_of(namespace)
                stamp = BAG_EPOCH_NS + frame.stamp
                sec, nanosec = divmod(stamp, NS_PER_S)
                header = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                    frame_id=namespace.lstrip("/") or "camera",
                )
                msg = image_message(store, header, swap_red_blue(frame.load()), compressed)
                writer.write(camera, stamp, store.serialize_cdr(msg, image_type))
                if frame.labels is not None:
                    writer.write(
                        truth,
                        stamp,
                        store.serialize_cdr(
                            _truth(t, header, frame, task), "spotvlm_msgs/msg/GroundTruth"
                        ),
                    )
                count += 1
    except DatasetError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if count == 0:
        shutil.rmtree(out, ignore_errors=True)
        raise DatasetError("the sequence held no frames")
    return count


def image_message(store: Any, header: Any, bgr: np.ndarray, compressed: bool) -> Any:
    """A rosbags sensor_msgs Image (bgr8) or CompressedImage (JPEG) of a BGR frame."""
    t = store.types
    if compressed:
        import cv2

        data = np.frombuffer(cv2.imencode(".jpg", bgr)[1].tobytes(), np.uint8)
        return t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=data)
    height, width = bgr.shape[:2]
    return t["sensor_msgs/msg/Image"](
        header=header,
        height=height,
        width=width,
        encoding="bgr8",
        is_bigendian=0,
        step=width * 3,
        data=bgr.reshape(-1),
    )


def _truth(t: Any, header: Any, frame: LabelledFrame, task: str) -> Any:
    rois = []
    for roi in frame.boxes:
        x1, y1 = int(roi.box.x1), int(roi.box.y1)
        box = t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=x1,
            y_offset=y1,
            width=int(roi.box.x2) - x1,
            height=int(roi.box.y2) - y1,
            do_rectify=False,
        )
        track = -1 if roi.track_id is None else int(roi.track_id)
        rois.append(t["spotvlm_msgs/msg/Roi"](label=roi.label, score=1.0, box=box, track_id=track))
    return t["spotvlm_msgs/msg/GroundTruth"](
        header=header,
        task=task,
        labels=sorted(frame.labels or ()),
        boxes=rois,
        # the reference a caption is scored against: its action ('none': no action)
        text=", ".join(sorted(frame.labels or ())) or "none" if task == "caption" else "",
    )


def retimed(frames: Iterable[LabelledFrame], fps: float) -> Iterator[LabelledFrame]:
    """The same frames at a chosen rate."""
    for i, frame in enumerate(frames):
        yield dataclasses.replace(frame, stamp=round(i / fps * NS_PER_S))


def limited(frames: Iterable[LabelledFrame], limit: int) -> Iterator[LabelledFrame]:
    """At most ``limit`` frames (0: all)."""
    for i, frame in enumerate(frames):
        if limit and i >= limit:
            return
        yield frame


def _camera_option(kind: str, camera: str | None) -> str | None:
    """The reader's camera for ``--camera`` (None: the reader takes no camera)."""
    if kind != CAMERA_KIND:
        if camera is not None:
            raise ValueError(f"--camera is only for kind {CAMERA_KIND}, not {kind}")
        return None
    if camera is None:
        return DEFAULT_CAMERA
    # The reader names the channels there are when it has no such camera.
    return ALL_CAMERAS if camera.lower() == ALL_CAMERAS else camera.upper()


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(prog="spotvlm-make-bag", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=sorted(READERS), help="what SOURCE is")
    p.add_argument("source", type=Path, help="dataset folder, image folder or video file")
    p.add_argument("out", type=Path, help="bag folder to create")
    p.add_argument(
        "--task",
        choices=tuple(TASKS),
        default=None,
        help="the task of the ground truth (default: the reader's: gesture for hagrid and ipn, "
        "caption for ace, else objects)",
    )
    p.add_argument(
        "--vocabulary", default="", help="vocabulary of the ground truth ('' = the task's)"
    )
    p.add_argument("--rate", type=float, default=0.0, help="retime to this many frames/s")
    p.add_argument("--limit", type=int, default=0, help="at most this many frames")
    p.add_argument("--compressed", action="store_true", help="JPEG CompressedImage frames")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--camera",
        default=None,
        help=f"nuscenes only: the camera channel (default {DEFAULT_CAMERA}) or 'all' for "
        "every camera, each on its own topics (/cam_front/camera/image_raw, ...)",
    )
    args = p.parse_args(argv)
    try:
        chosen = task(args.task or TASK_OF.get(args.kind, "objects"))
        vocab = chosen.vocabulary(args.vocabulary or VOCABULARY_OF.get(args.kind, ""))
        camera = _camera_option(args.kind, args.camera)
        if not args.source.exists():
            raise DatasetError(f"{args.source} does not exist (expected a {args.kind} source)")
        options = {} if camera is None else {"camera": camera}
        frames: Iterable[LabelledFrame] = READERS[args.kind](args.source, vocab, **options)
        frames = limited(frames, args.limit)
        if args.rate:
            frames = retimed(frames, args.rate)
        n = write_bag(
            frames,
            args.out,
            task=chosen.name,
            compressed=args.compressed,
            storage=args.storage,
            overwrite=args.overwrite,
            camera_namespaces=camera == ALL_CAMERAS,
        )
    except (DatasetError, ValueError) as exc:
        print(f"spotvlm-make-bag: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def bag_task(path: Path) -> str | None:
    """The task of a bag's ground truth (its first GroundTruth's), or None without one."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise DatasetError(f"{path}: no such bag")
    store = typestore()
    with Reader(path) as reader:
        truths = [c for c in reader.connections if c.msgtype == "spotvlm_msgs/msg/GroundTruth"]
        for connection, _, raw in reader.messages(connections=truths):
            return str(store.deserialize_cdr(raw, connection.msgtype).task) or None
    return None


def bag_frames(path: Path, vocab: Any) -> list[LabelledFrame]:
    """The camera frames of a bag (raw or compressed) with their ground truth, if any."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise DatasetError(f"{path}: no such bag")
    store = typestore()
    images: dict[int, Any] = {}
    truths: dict[int, Any] = {}
    with Reader(path) as reader:
        for connection, stamp, raw in reader.messages():
            if connection.msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
                images[stamp] = (connection.msgtype, raw)
            elif connection.msgtype == "spotvlm_msgs/msg/GroundTruth":
                truths[stamp] = store.deserialize_cdr(raw, connection.msgtype)
    if not images:
        raise DatasetError(f"{path}: no camera frames in the bag")
    start = min(images)

    def loader(msgtype: str, raw: bytes) -> Any:
        def load() -> np.ndarray:
            from spotvlm_ros.imaging import decode_compressed, raw_to_rgb

            msg = store.deserialize_cdr(raw, msgtype)
            if msgtype.endswith("CompressedImage"):
                return decode_compressed(bytes(msg.data))
            return raw_to_rgb(bytes(msg.data), msg.width, msg.height, msg.encoding, msg.step)

        return load

    frames = []
    for stamp in sorted(images):
        truth = truths.get(stamp)
        labels = vocab.normalize_all(truth.labels) if truth is not None else None
        frames.append(
            LabelledFrame(f"{path.name}@{stamp}", stamp - start, loader(*images[stamp]), labels)
        )
    return frames
