"""Backends of the local LVLM server: what answers a chat request with an image.

- ``DetectorBackend``: a real ONNX COCO detector (CenterNet/MobileNetV3) standing in for a
  grounding LVLM at CPU speed: it answers the object question from its detections and
  returns their boxes as Qwen-style ``bbox_2d`` JSON in the pixels of the received image.
- ``QwenBackend``: a Qwen2.5-VL model folder (full image, no pruning).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from spotvlm_ros.core.vocab import COCO_CLASSES, Vocabulary, vocabulary

DEFAULT_DETECTOR = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "models"
    / ("centernet_mobilenetv3_coco.onnx")
)


class BackendError(Exception):
    """The backend could not be created or could not answer."""


class StoppingError(BackendError):
    """The server is shutting down: a reply in progress was ended (answered with 503)."""


class UnsupportedRequestError(BackendError):
    """The request asks for something this backend cannot do (answered with HTTP 400)."""

    def __init__(self, message: str, param: str = "") -> None:
        super().__init__(message)
        self.param = param  # the request field at fault (OpenAI error's ``param``)


@dataclass(frozen=True)
class Reply:
    """A backend's reply: its text, why it ended, and its length in tokens if known."""

    text: str
    finish_reason: str = "stop"  # "stop", or "length" when the token limit cut it
    completion_tokens: int | None = None


class Backend(Protocol):
    """Answers one chat turn about one RGB image."""

    name: str

    def answer(self, image: np.ndarray, prompt: str) -> str:
        """The reply text to ``prompt`` about ``image`` (H x W x 3 RGB uint8)."""
        ...

    def reply(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        max_tokens: int | None,
        structured: bool,
        task: str = "",
    ) -> Reply:
        """The reply within ``max_tokens``; ``structured``: a JSON object following
        ``spotvlm_ros.cloud.client.RESPONSE_SCHEMA``; ``task``: what the client said it asks
        ('' = not said). UnsupportedRequestError for what the backend cannot answer."""
        ...


@dataclass(frozen=True)
class Detection:
    """One detector box in the pixels of the image it was run on."""

    label: str  # COCO class name
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


class DetectorBackend:
    """The ONNX COCO detector as a grounding "LVLM"."""

    INPUT = "tower_0/images:0"
    OUTPUT = "tower_0/detections"
    SIZE = 512

    def __init__(
        self,
        model_path: Path = DEFAULT_DETECTOR,
        *,
        task_vocabulary: str = "bdd100k",
        score_threshold: float = 0.3,
        nms_iou: float = 0.5,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise BackendError(
                f"detector model not found at {path} (option --detector-model); the project "
                "expects ../shared/models/centernet_mobilenetv3_coco.onnx"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"cannot load the detector {path}: {exc}") from exc
        self.name = f"detector:{path.stem}"
        self.vocabulary: Vocabulary = vocabulary(task_vocabulary)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._lock = threading.Lock()  # one inference at a time per session

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections above the score threshold, after per-class NMS, in image pixels."""
        import cv2

        height, width = image.shape[:2]
        x = cv2.resize(image, (self.SIZE, self.SIZE), interpolation=cv2.INTER_LINEAR)
        with self._lock:
            rows = self.session.run([self.OUTPUT], {self.INPUT: x.astype(np.float32)[None]})[0][0]
        rows = rows[rows[:, 4] >= self.score_threshold]
        sx, sy = width / self.SIZE, height / self.SIZE
        detections = []
        for cls in np.unique(rows[:, 5]).astype(int):
            if not 0 <= cls < len(COCO_CLASSES):
                continue
            mine = rows[rows[:, 5] == cls]
            boxes = [
                [float(r[0]), float(r[1]), float(r[2] - r[0]), float(r[3] - r[1])] for r in mine
            ]
            keep = cv2.dnn.NMSBoxes(boxes, mine[:, 4].tolist(), self.score_threshold, self.nms_iou)
            for i in np.array(keep).flatten():
                r = mine[int(i)]
                x1, x2 = np.clip([r[0] * sx, r[2] * sx], 0, width)
                y1, y2 = np.clip([r[1] * sy, r[3] * sy], 0, height)
                if x2 - x1 >= 1 and y2 - y1 >= 1:
                    detections.append(
                        Detection(
                            COCO_CLASSES[cls],
                            float(r[4]),
                            float(x1),
                            float(y1),
                            float(x2),
                            float(y2),
                        )
                    )
        return sorted(detections, key=lambda d: -d.score)

    def answer(self, image: np.ndarray, prompt: str) -> str:
        """A Qwen-style grounding reply: a sentence, then the boxes as fenced JSON."""
        return self.reply(image, prompt, max_tokens=None, structured=False).text

    def reply(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        max_tokens: int | None,
        structured: bool,
        task: str = "",
    ) -> Reply:
        """The grounding reply; ``structured``: the JSON object of RESPONSE_SCHEMA, bare (as
        a server with constrained decoding returns it). A detector's reply is short: the
        token limit does not apply to it. It answers only the objects task: a request that
        says it asks another (the client's task header) is refused, not answered with
        objects."""
        del prompt, max_tokens  # a detector answers one question: which objects are there
        if task and task != "objects":
            raise UnsupportedRequestError(
                f"this server's detector backend answers only the objects task, not {task!r} "
                "(a detector cannot recognise gestures or write captions): start "
                "spotvlm-lvlm-server with --backend qwen --qwen-model <Qwen2.5-VL folder>, or "
                "point "
                "the client at a VLM server",
                param="messages",
            )
        sentence, objects = self._describe(image)
        if structured:
            text = json.dumps({"answer": sentence, "objects": objects})
        else:
            text = f"{sentence}\n```json\n{json.dumps(objects)}\n```"
        return Reply(text, "stop", len(text.split()))

    def _describe(self, image: np.ndarray) -> tuple[str, list[dict[str, object]]]:
        objects = []
        counts: dict[str, int] = {}
        for det in self.detect(image):
            labels = self.vocabulary.normalize(det.label)
            if not labels:
                continue  # not a category of this task
            label = sorted(labels)[0]
            counts[label] = counts.get(label, 0) + 1
            box = [round(det.x1), round(det.y1), round(det.x2), round(det.y2)]
            objects.append({"bbox_2d": box, "label": label, "score": round(det.score, 3)})
        if not counts:
            return "I cannot see any of the listed objects.", []
        parts = [
            f"{n} {label.replace('_', ' ')}{'s' if n > 1 else ''}"
            for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        sentence = (
            "I can see "
            + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])
            + "."
        )
        return sentence, objects


class QwenBackend:
    """A Qwen2.5-VL model folder answering with the full image."""

    def __init__(self, model_path: str, *, max_new_tokens: int = 128, device: str = "auto") -> None:
        from spotvlm_ros.svlm.qwen import QwenSvlm, QwenSvlmConfig, SvlmError

        try:
            self.svlm = QwenSvlm.load(
                QwenSvlmConfig(
                    model=model_path,
                    max_new_tokens=max_new_tokens,
                    device=device,
                    max_pixels=28 * 28 * 1280,
                )
            )
        except SvlmError as exc:
            raise BackendError(str(exc)) from exc
        self.name = f"qwen:{Path(model_path).name or model_path}"
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """The server is stopping: a reply being generated ends at its next token (an error
        reply), so that shutdown does not wait for a long generation."""
        self._stopping.set()

    def _check_stopping(self, tokens: int) -> None:
        if self._stopping.is_set():
            raise StoppingError(f"the server is shutting down ({tokens} tokens generated)")

    def answer(self, image: np.ndarray, prompt: str) -> str:
        """The model's reply (expected to hold bbox_2d JSON when asked for it)."""
        return self.reply(image, prompt, max_tokens=None, structured=False).text

    def reply(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        max_tokens: int | None,
        structured: bool,
        task: str = "",
    ) -> Reply:
        """Greedy decoding up to ``max_tokens`` (at most the server's --max-new-tokens), for
        any task (the prompt says what is asked);
        finish_reason "length" when the limit cut the reply. Constrained decoding to a JSON
        schema is not implemented here: ``structured`` is refused, as a server without a
        grammar backend refuses it."""
        if structured:
            raise UnsupportedRequestError(
                "response_format json_schema/json_object: the qwen backend of this server "
                "has no constrained decoding; ask without response_format",
                param="response_format",
            )
        del task  # a VLM answers whatever the prompt asks
        limit = min(max_tokens or self.max_new_tokens, self.max_new_tokens)
        with self._lock:
            out = self.svlm.infer(
                image, prompt, max_new_tokens=limit, on_token=self._check_stopping
            )
        return Reply(out.answer, "stop" if out.stopped else "length", out.generated_tokens)
