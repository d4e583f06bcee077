"""The OpenAI-compatible LVLM client used by the cloud bridge (no ROS in it).

It sends one frame with a grounding prompt to any chat-completions server (vLLM, SGLang,
LMDeploy, Ollama, or the package's own server), parses the reply into answer, labels and
ROIs in the original frame's pixels, and returns every outcome as a typed result: it
never raises into its caller.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import importlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from spotvlm_ros.core.endpoints import Endpoint, EndpointPool, Health, parse_retry_after
from spotvlm_ros.core.engine import RequestEnd
from spotvlm_ros.core.focus import smart_resize
from spotvlm_ros.core.parsing import Coordinates, parse_reply
from spotvlm_ros.core.task import DEFAULT_TASK, TASK_HEADER, AnswerForm, parse_one_label, task
from spotvlm_ros.core.types import Roi, keep_best_rois
from spotvlm_ros.core.vocab import Vocabulary
from spotvlm_ros.imaging import swap_red_blue

DEFAULT_PROMPT = (
    "{question}\n"
    "Answer with {answer}. Then list {rois} as JSON in a ```json "
    'block: [{{"bbox_2d": [x1, y1, x2, y2], "label": "<category>"}}], with coordinates in '
    "pixels of this image."
)
"""``{question}``: the task's question; ``{answer}``: the form of its answer
(Task.answer_form); ``{rois}``: what its ROIs are (Task.roi_request)."""

STRUCTURED_PROMPT = (
    "{question}\n"
    "Reply with JSON: `answer`, {answer}; `objects`, {rois}, "
    'each {{"bbox_2d": [x1, y1, x2, y2], "label": "<category>"}} with coordinates in pixels '
    "of this image."
)

"""The prompt when the JSON is asked for through ``response_format`` (the schema shapes it)."""

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "objects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "bbox_2d": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "minItems": 4,
                        "maxItems": 4,
                    },
                    "label": {"type": "string"},
                },
                "required": ["bbox_2d", "label"],
            },
        },
    },
    "required": ["answer", "objects"],
}
"""A grounding reply as asked for through ``response_format``: the answer sentence and the
objects in Qwen's ``bbox_2d`` form (pixels of the image sent)."""

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "spotvlm_grounding", "schema": RESPONSE_SCHEMA, "strict": True},
}


class OutcomeKind(enum.Enum):
    """How a request ended."""

    OK = "ok"
    TIMEOUT = "timeout"  # no reply within the request timeout
    CONNECTION = "connection"  # refused, reset, or DNS failure
    REJECTED = "rejected"  # 429/503/401/403/400/413: the server refused the request
    HTTP_ERROR = "http_error"  # any other HTTP error status
    UNPARSABLE = "unparsable"  # a reply without usable content
    BUSY = "busy"  # the client already has max_in_flight requests outstanding
    BAD_INPUT = "bad_input"  # the frame could not be encoded


@dataclass(frozen=True)
class LvlmClientConfig:
    """Where and how to ask the LVLM.

    Attributes:
        base_url: the server's OpenAI-compatible API root, e.g. http://gpu-box:8000/v1; a
            comma-separated list names replicas of one engine (health-aware choice and
            failover between them, core.endpoints).
        model: the served model name, e.g. Qwen/Qwen2.5-VL-72B-Instruct.
        api_key_env: NAME of the environment variable that holds the API key (the key is
            never a parameter and is never logged); empty means no key.
        timeout: per-request timeout (s).
        max_in_flight: requests outstanding at once; more are refused as BUSY, not queued.
        max_pixels: the frame is resized (multiples of 28) to at most this many pixels.
        jpeg_quality: JPEG quality of the uploaded frame.
        coordinates: how the model's boxes are expressed.
        task: the task asked (objects, gesture, caption: spotvlm_ros.core.task): how the
            answer is parsed into labels and what the ROIs are.
        task_vocabulary: the vocabulary labels are mapped into ('' = the task's default).
        ca_bundle: a PEM file of CA certificates to verify an https server with (empty:
            the system's); certificates are always verified.
        prompt: the grounding prompt; ``{question}`` is replaced by the question.
        max_tokens: the reply's length limit (a reply it cuts is reported as truncated).
        structured_output: ask for the ROI JSON through ``response_format`` with a JSON
            schema (vLLM, SGLang: parseable by construction); a server that refuses it
            (HTTP 400) is asked with plain prompting from then on.
        user: sent as the OpenAI ``user`` field (what vLLM and gateways log and rate-limit
            by): the robot and camera, e.g. ``robot1/cam_front``.
        retry_after_s: how long a 429/503 without a Retry-After header holds uploads.
        endpoint_backoff_s, endpoint_max_backoff_s: a replica that fails is skipped this
            long, doubling with each failure in a row up to the maximum.
        max_reply_bytes: a reply body larger than this is not read (refused as
            unparsable): nothing a server sends makes the work per frame unbounded.
        max_rois: ROIs kept per reply, the highest-scoring (in the reply's order).
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-VL-72B-Instruct"
    api_key_env: str = ""
    timeout: float = 10.0
    max_in_flight: int = 2
    max_pixels: int = 28 * 28 * 1280
    jpeg_quality: int = 90
    coordinates: Coordinates = Coordinates.ABSOLUTE
    task: str = DEFAULT_TASK
    task_vocabulary: str = ""
    ca_bundle: str = ""
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 512
    structured_output: bool = False
    user: str = ""
    retry_after_s: float = 1.0
    endpoint_backoff_s: float = 2.0
    endpoint_max_backoff_s: float = 60.0
    max_reply_bytes: int = 256 * 1024
    max_rois: int = 100

    @property
    def urls(self) -> tuple[str, ...]:
        """The endpoints named by ``base_url``."""
        return tuple(u.strip() for u in self.base_url.split(",") if u.strip())

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("base_url names no endpoint")
        if not 0 < self.endpoint_backoff_s <= self.endpoint_max_backoff_s:
            raise ValueError(
                "need 0 < endpoint_backoff_s <= endpoint_max_backoff_s, got "
                f"{self.endpoint_backoff_s}, {self.endpoint_max_backoff_s}"
            )
        if self.timeout <= 0 or self.max_in_flight < 1:
            raise ValueError(
                f"timeout must be > 0 s and max_in_flight >= 1, got {self.timeout}, "
                f"{self.max_in_flight}"
            )
        if self.max_reply_bytes < 1024 or self.max_rois < 0:
            raise ValueError(
                f"need max_reply_bytes >= 1024 and max_rois >= 0, got {self.max_reply_bytes}, "
                f"{self.max_rois}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        task(self.task).vocabulary(self.task_vocabulary)  # raises for an unknown name


@dataclass(frozen=True)
class LvlmOutcome:
    """The result of one request."""

    kind: OutcomeKind
    latency: float  # s, round trip as measured by the client (0 when never sent)
    answer: str = ""
    labels: frozenset[str] = frozenset()
    rois: tuple[Roi, ...] = ()
    model: str = ""
    error: str = ""
    http_status: int | None = None
    problems: tuple[str, ...] = field(default=())
    truncated: bool = False  # the server's token limit cut the reply (finish_reason length)
    endpoint: str = ""  # the endpoint that answered (or failed last)
    retry_after: float | None = None  # s: the server asked for less load (429/503)
    rois_cut: int = 0  # valid ROIs beyond max_rois, not kept
    too_large: bool = False  # the reply was over max_reply_bytes (or encoded): not read

    @property
    def ok(self) -> bool:
        """Whether an answer came back."""
        return self.kind is OutcomeKind.OK


def encode_frame(image: np.ndarray, max_pixels: int, quality: int) -> tuple[str, tuple[int, int]]:
    """The frame as a JPEG data URL, resized to multiples of 28 within ``max_pixels``;
    returns (url, (width, height) sent)."""
    import cv2

    height, width = image.shape[:2]
    new_h, new_w = smart_resize(height, width, max_pixels=max_pixels)
    resized = (
        image
        if (new_h, new_w) == (height, width)
        else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    )
    bgr = swap_red_blue(resized)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode(), (new_w, new_h)


def interpret_reply(
    content: str,
    vocab: Vocabulary,
    *,
    frame_size: tuple[int, int],
    model_size: tuple[int, int],
    coordinates: Coordinates = Coordinates.ABSOLUTE,
    task_name: str = DEFAULT_TASK,
) -> tuple[str, frozenset[str], tuple[Roi, ...], tuple[str, ...]]:
    """A grounding reply as (answer, labels in the task vocabulary, ROIs in frame pixels with
    vocabulary labels, problems met). Shared by the client and the offline evaluator.

    The labels, by the task: objects, those the answer names and the boxes' labels; gesture,
    the one class the answer names (else the boxes' one class, else none) and at most one
    ROI, the hand's; caption, the actions the answer names (the boxes are objects, not
    actions)."""
    parsed = parse_reply(
        content, model_size=model_size, frame_size=frame_size, coordinates=coordinates
    )
    rois = []
    for roi in parsed.rois:
        mapped = vocab.normalize(roi.label)
        rois.append(
            Roi(sorted(mapped)[0] if mapped else roi.label, roi.box, roi.score, roi.track_id)
        )
    chosen = task(task_name)
    labels = chosen.parse(vocab, parsed.answer)
    if chosen.form is AnswerForm.LABELS:
        labels |= vocab.normalize_all(r.label for r in parsed.rois)
    elif chosen.form is AnswerForm.LABEL:
        if not labels:  # a reply whose answer is only the JSON: its box's one class
            labels = parse_one_label(vocab, " ".join(r.label for r in parsed.rois))
        # the hand's box: the one labelled with the class, else the best-scoring
        hand = [r for r in rois if r.label in labels] or sorted(rois, key=lambda r: -r.score)
        rois = hand[:1]
    return parsed.answer, labels, tuple(rois), parsed.problems


class ReplyTooLargeError(Exception):
    """A reply body over ``max_reply_bytes``: not read further."""


@functools.cache
def _capped_stream_class(base: type) -> type:
    """A response stream, on ``base`` (the AsyncByteStream of the httpx package the openai SDK
    uses: httpx, or httpx2 from openai 3), that stops with ReplyTooLargeError past its limit."""

    class CappedStream(base):  # type: ignore[misc]
        def __init__(self, stream: Any, limit: int) -> None:
            self._stream = stream
            self._limit = limit

        async def __aiter__(self) -> AsyncIterator[bytes]:
            total = 0
            async for chunk in self._stream:
                total += len(chunk)
                if total > self._limit:
                    raise ReplyTooLargeError(
                        f"the reply exceeds max_reply_bytes ({self._limit} bytes): not read further"
                    )
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    return CappedStream


def _http_package(client_class: type) -> Any:
    """The httpx package ``client_class`` (an SDK's AsyncClient subclass) is built on."""
    for base in client_class.__mro__:
        if base.__name__ == "AsyncClient" and hasattr(
            module := importlib.import_module(base.__module__.split(".")[0]), "AsyncByteStream"
        ):
            return module
    raise RuntimeError(f"{client_class} is not an httpx AsyncClient")


def _too_large(exc: BaseException | None) -> ReplyTooLargeError | None:
    """The ReplyTooLargeError behind ``exc`` (the SDK wraps what the transport raised)."""
    while exc is not None:
        if isinstance(exc, ReplyTooLargeError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _extra(message: Any, name: str) -> Any:
    """A field of a reply message that the openai SDK does not model (kept as an extra)."""
    if message is None:
        return None
    value = getattr(message, name, None)
    if value is None:
        extras = getattr(message, "model_extra", None) or {}
        value = extras.get(name)
    return value


def request_end(outcome: LvlmOutcome) -> RequestEnd:
    """How the upload policy sees a request's outcome (cloud_bridge, spotvlm-eval):
    429/503 from every replica holds the uploads (slow down, do not retry blindly); a timeout
    counts as the time waited (the cloud is at least that slow); a refusal or a dead server
    answers fast, which says nothing of the speed."""
    if outcome.retry_after is not None:
        return RequestEnd.BUSY
    if outcome.ok:
        return RequestEnd.ANSWERED
    if outcome.kind is OutcomeKind.UNPARSABLE:
        return RequestEnd.UNUSABLE
    if outcome.kind is OutcomeKind.TIMEOUT:
        return RequestEnd.TIMED_OUT
    return RequestEnd.FAILED


def _endpoint_fault(outcome: LvlmOutcome) -> bool:
    """Whether a failure says the endpoint itself is unwell (down, hung, 5xx)."""
    if outcome.kind in (OutcomeKind.CONNECTION, OutcomeKind.TIMEOUT):
        return True
    return outcome.http_status is not None and outcome.http_status >= 500


def _is_bad_request(exc: Exception) -> bool:
    import openai

    return isinstance(exc, openai.APIStatusError) and exc.status_code == 400


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` (an API key) replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


class LvlmClient:
    """Asynchronous client; use from one asyncio event loop."""

    def __init__(self, config: LvlmClientConfig) -> None:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        self.config = config
        self.task = task(config.task)
        self.vocabulary = self.task.vocabulary(config.task_vocabulary)
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self._secret = key
        if config.ca_bundle and not os.path.isfile(config.ca_bundle):
            raise ValueError(f"ca_bundle {config.ca_bundle!r}: no such file")
        # https certificates are always verified: against ca_bundle, else the system's CA
        # store (where update-ca-certificates puts a private CA; httpx alone would use
        # certifi's bundle instead)
        verify = ssl.create_default_context(cafile=config.ca_bundle or None)
        # The SDK insists on a key; servers without auth ignore it. Its default HTTP client
        # keeps the SDK's connection limits.
        self._clients = {
            url: AsyncOpenAI(
                base_url=url,
                api_key=key or "EMPTY",
                timeout=config.timeout,
                max_retries=0,
                # identity: a compressed body would inflate past max_reply_bytes after
                # the cap had counted its compressed size
                http_client=DefaultAsyncHttpxClient(
                    verify=verify,
                    headers={"Accept-Encoding": "identity"},
                    event_hooks={"response": [self._cap_reply]},
                ),
            )
            for url in config.urls
        }
        self._capped = _capped_stream_class(_http_package(DefaultAsyncHttpxClient).AsyncByteStream)
        self.pool = EndpointPool(
            config.urls, config.endpoint_backoff_s, config.endpoint_max_backoff_s
        )
        self._in_flight = 0
        self.structured_refused = ""  # why the server refused response_format, once it did

    async def _cap_reply(self, response: Any) -> None:
        """Refuse a reply over max_reply_bytes: by its Content-Length before reading, and
        while reading when it has none (chunked)."""
        limit = self.config.max_reply_bytes
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ReplyTooLargeError(
                f"the reply is {encoding}-encoded although identity was asked for: its size "
                f"after decoding cannot be bounded by max_reply_bytes ({limit}); not read"
            )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ReplyTooLargeError(
                f"the reply is {int(length)} bytes, over max_reply_bytes ({limit}): not read"
            )
        response.stream = self._capped(response.stream, limit)

    @property
    def in_flight(self) -> int:
        """Requests outstanding."""
        return self._in_flight

    async def close(self) -> None:
        """Close the HTTP connections."""
        for client in self._clients.values():
            await client.close()

    async def ask(self, image: np.ndarray, question: str) -> LvlmOutcome:
        """Ask ``question`` about ``image`` (H x W x 3 RGB uint8). Never raises."""
        if self._in_flight >= self.config.max_in_flight:
            return LvlmOutcome(OutcomeKind.BUSY, 0.0, error=f"{self._in_flight} requests in flight")
        try:
            url, sent = encode_frame(image, self.config.max_pixels, self.config.jpeg_quality)
        except (ValueError, AttributeError, TypeError, IndexError) as exc:
            return LvlmOutcome(OutcomeKind.BAD_INPUT, 0.0, error=f"cannot encode frame: {exc}")
        self._in_flight += 1
        start = time.perf_counter()
        frame = (image.shape[1], image.shape[0])
        tried: set[str] = set()
        last: LvlmOutcome | None = None
        try:
            while True:
                now = time.monotonic_ns()
                endpoint = self.pool.choose(now, frozenset(tried))
                if endpoint is None:
                    if last is not None:  # no other replica to fail over to: its error
                        return last
                    return self._none_usable(now, False, time.perf_counter() - start)
                tried.add(endpoint.url)
                last, retry = await self._attempt(endpoint, url, question, frame, sent, start)
                if not retry:
                    return last
        finally:
            self._in_flight -= 1

    async def _attempt(
        self,
        endpoint: Endpoint,
        url: str,
        question: str,
        frame: tuple[int, int],
        sent: tuple[int, int],
        start: float,
    ) -> tuple[LvlmOutcome, bool]:
        """One request to ``endpoint``: its outcome, and whether to try another replica.
        The endpoint's bookkeeping is settled on every path (cancellation included)."""
        self.pool.started(endpoint)
        settled = False
        try:
            try:
                reply = await self._ask_endpoint(endpoint.url, url, question)
            except Exception as exc:
                outcome = self._failure(exc, time.perf_counter() - start, endpoint.url)
                text, now = outcome.error[:200], time.monotonic_ns()
                if outcome.retry_after is not None:
                    # busy (429/503): another replica may take this frame; the caller backs
                    # off only when none can
                    self.pool.busy(endpoint, now, outcome.retry_after, text)
                    settled = True
                    return outcome, self.pool.choose(now) is not None
                if _endpoint_fault(outcome):
                    timeout = outcome.kind is OutcomeKind.TIMEOUT
                    self.pool.failed(endpoint, now, text, escalate=not timeout)
                    settled = True
                    # fail over at once, but not after a timeout: its time is spent
                    return outcome, not timeout
                self.pool.finished_otherwise(endpoint)
                settled = True
                return outcome, False
            self.pool.succeeded(endpoint)
            settled = True
            outcome = self._outcome(reply, time.perf_counter() - start, frame, sent)
            return replace(outcome, endpoint=endpoint.url), False
        finally:
            if not settled:  # cancelled, or a bug above: never leak the in-flight count
                self.pool.finished_otherwise(endpoint)

    def _none_usable(self, now: int, tried: bool, latency: float) -> LvlmOutcome:
        """No replica can be asked now: say why, and (when they are busy, not down) how
        long to hold uploads."""
        states = "; ".join(
            f"{e.url}: {e.health.value} ({e.last_error[:120]})" for e in self.pool.endpoints
        )
        wait = self.pool.next_usable_in(now)
        busy = all(e.health is Health.BUSY for e in self.pool.endpoints if not e.usable(now))
        return LvlmOutcome(
            OutcomeKind.REJECTED if busy else OutcomeKind.CONNECTION,
            latency,
            error=f"no LVLM endpoint usable now (next in {wait:.1f} s): {states}",
            retry_after=wait if busy and not tried else None,
        )

    async def _ask_endpoint(self, endpoint: str, url: str, question: str) -> Any:
        structured = self.config.structured_output and not self.structured_refused
        try:
            return await self._request(endpoint, url, question, structured)
        except Exception as exc:
            if not (structured and _is_bad_request(exc)):
                raise
            # a server without constrained decoding: ask again, plainly; if that works, the
            # refusal was response_format's, and plain prompting is used from now on
            reply = await self._request(endpoint, url, question, False)
            self.structured_refused = redact(f"{type(exc).__name__}: {exc}", self._secret)[:300]
            return reply

    async def _request(self, endpoint: str, url: str, question: str, structured: bool) -> Any:
        prompt = STRUCTURED_PROMPT if structured else self.config.prompt
        extra: dict[str, Any] = {"response_format": RESPONSE_FORMAT} if structured else {}
        extra["extra_headers"] = {TASK_HEADER: self.task.name}
        if self.config.user:
            extra["user"] = self.config.user
        return await self._clients[endpoint].chat.completions.create(
            model=self.config.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {
                            "type": "text",
                            "text": prompt.format(
                                question=question,
                                answer=self.task.answer_form,
                                rois=self.task.roi_request,
                            ),
                        },
                    ],
                }
            ],
            max_tokens=self.config.max_tokens,
            temperature=0.0,
            **extra,
        )

    def _outcome(
        self, reply: Any, latency: float, frame: tuple[int, int], sent: tuple[int, int]
    ) -> LvlmOutcome:
        model = str(getattr(reply, "model", "") or "")
        choices = getattr(reply, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        # vLLM >= 0.11 and Ollama say "reasoning", SGLang and older vLLM "reasoning_content"
        reasoning = _extra(message, "reasoning") or _extra(message, "reasoning_content")
        cut = choices and getattr(choices[0], "finish_reason", None) == "length"
        limit = (
            f"the token limit cut the reply (max_tokens {self.config.max_tokens} asked; the "
            "server may allow fewer)"
        )
        if not isinstance(content, str) or not content.strip():
            if isinstance(reasoning, str) and reasoning.strip():
                error = (
                    f"the reply holds only reasoning ({len(reasoning)} characters) and no "
                    "content" + (f": {limit} before the answer" if cut else "")
                )
            else:
                error = limit + " before any text" if cut else "the reply has no text content"
            return LvlmOutcome(
                OutcomeKind.UNPARSABLE, latency, model=model, error=error, truncated=bool(cut)
            )
        answer, labels, rois, problems = interpret_reply(
            content,
            self.vocabulary,
            frame_size=frame,
            model_size=sent,
            coordinates=self.config.coordinates,
            task_name=self.task.name,
        )
        if cut:
            problems = (f"{limit} (finish_reason length)", *problems)
        kept = keep_best_rois(rois, self.config.max_rois)
        rois_cut = len(rois) - len(kept)
        if rois_cut:
            problems = (
                f"{len(rois)} ROIs in the reply: kept the {len(kept)} highest-scoring (max_rois)",
                *problems,
            )
            rois = kept
        if not answer and not rois:
            return LvlmOutcome(
                OutcomeKind.UNPARSABLE,
                latency,
                model=model,
                error="no answer text and no valid ROIs in the reply: " + "; ".join(problems)[:300],
                problems=problems,
                truncated=bool(cut),
            )
        return LvlmOutcome(
            OutcomeKind.OK,
            latency,
            answer,
            labels,
            rois,
            model,
            problems=problems,
            truncated=bool(cut),
            rois_cut=rois_cut,
        )

    def _failure(self, exc: Exception, latency: float, endpoint: str = "") -> LvlmOutcome:
        import openai

        # whatever a library puts in its exception text, the key never leaves this object
        text = redact(f"{type(exc).__name__}: {exc}", self._secret)[:500]
        too_large = _too_large(exc)
        if too_large is not None:  # the server answered: not an endpoint fault
            return LvlmOutcome(
                OutcomeKind.UNPARSABLE,
                latency,
                error=str(too_large),
                endpoint=endpoint,
                too_large=True,
            )
        if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError)):
            return LvlmOutcome(OutcomeKind.TIMEOUT, latency, error=text, endpoint=endpoint)
        if isinstance(exc, openai.APIConnectionError):
            return LvlmOutcome(OutcomeKind.CONNECTION, latency, error=text, endpoint=endpoint)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            kind = (
                OutcomeKind.REJECTED
                if status in (400, 401, 403, 413, 422, 429, 503)
                else (OutcomeKind.HTTP_ERROR)
            )
            retry_after = None
            if status in (429, 503):  # back-pressure: the caller slows down, no blind retry
                header = exc.response.headers.get("retry-after") if exc.response else None
                retry_after = parse_retry_after(header, self.config.retry_after_s)
            return LvlmOutcome(
                kind,
                latency,
                error=text,
                http_status=status,
                endpoint=endpoint,
                retry_after=retry_after,
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return LvlmOutcome(OutcomeKind.UNPARSABLE, latency, error=text, endpoint=endpoint)
        return LvlmOutcome(OutcomeKind.HTTP_ERROR, latency, error=text, endpoint=endpoint)
