"""The package's own OpenAI-compatible LVLM server (``spotvlm-lvlm-server``).

In the field the LVLM is served by vLLM, SGLang, LMDeploy or Ollama. On a laptop, in CI
and in the demo, this server stands in for it: the same ``/v1/chat/completions`` API,
a real backend (ONNX detector or a Qwen2.5-VL folder), and injectable latency and faults.

    spotvlm-lvlm-server --backend detector --latency 2.0 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from spotvlm_ros.cloud.backends import (
    DEFAULT_DETECTOR,
    Backend,
    BackendError,
    StoppingError,
    UnsupportedRequestError,
)
from spotvlm_ros.cloud.faults import (
    Fault,
    FaultConfig,
    FaultInjector,
    LatencyModel,
    read_trace,
)
from spotvlm_ros.core.task import TASK_HEADER
from spotvlm_ros.imaging import ImageError, decode_compressed

LOG = logging.getLogger("spotvlm.lvlm_server")


@dataclass(frozen=True)
class ServerConfig:
    """Limits and behaviour of the server."""

    model_name: str = "spotvlm-detector"
    max_concurrency: int = 8
    max_request_bytes: int = 16 * 2**20
    max_images: int = 1
    max_image_pixels: int = 4096 * 4096
    api_key: str | None = None
    hang_seconds: float = 600.0
    retry_after_s: float = 1.0  # sent with 429 (busy): when to try again
    faults: FaultConfig = field(default_factory=FaultConfig)


class ApiError(Exception):
    """An error answered with the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )

    headers: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ChatRequest:
    """What the server needs from a chat-completions request."""

    model: str
    prompt: str
    image: np.ndarray
    max_tokens: int | None = None
    structured: bool = False  # response_format json_schema or json_object


def _response_format(payload: dict[str, Any]) -> bool:
    """Whether the request asks for JSON through ``response_format`` (checked as vLLM
    checks it: a json_schema needs its object with a ``name``)."""
    spec = payload.get("response_format")
    if spec is None:
        return False
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return False
    if kind == "json_object":
        return True
    if kind == "json_schema":
        schema = spec.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise ApiError(
                400,
                "response_format json_schema needs a json_schema object with a 'name'",
                kind="BadRequestError",
                param="response_format",
            )
        return True
    raise ApiError(
        400,
        f"response_format type must be text, json_object or json_schema, got {kind!r}",
        kind="BadRequestError",
        param="response_format",
    )


def _max_tokens(payload: dict[str, Any]) -> int | None:
    value = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(
            400, f"max_tokens must be a positive integer, got {value!r}", param="max_tokens"
        )
    return value


INJECTED_LATENCY_HEADER = "x-spotvlm-injected-latency"
"""Response header: the latency (s) drawn for the request (the reply waits at least that)."""


def _parse_request(payload: Any, config: ServerConfig) -> ChatRequest:
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "missing or non-string field 'model'", param="model")
    if payload.get("stream"):
        raise ApiError(400, "streaming is not supported by this server", param="stream")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    texts: list[str] = []
    images: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"{where} must be an object with a string 'role'", param=where)
        content = message.get("content")
        if isinstance(content, str):
            if message["role"] == "user":
                texts.append(content)
            continue
        if not isinstance(content, list):
            raise ApiError(400, f"{where}.content must be a string or a list of parts", param=where)
        for j, part in enumerate(content):
            pwhere = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ApiError(
                    400, f"{pwhere} must be an object with a string 'type'", param=pwhere
                )
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise ApiError(400, f"{pwhere}.text must be a string", param=pwhere)
                if message["role"] == "user":
                    texts.append(part["text"])
            elif part["type"] == "image_url":
                spec = part.get("image_url")
                url = spec.get("url") if isinstance(spec, dict) else spec
                if not isinstance(url, str):
                    raise ApiError(400, f"{pwhere}.image_url.url must be a string", param=pwhere)
                images.append(url)
            else:
                raise ApiError(
                    400, f"{pwhere}: unsupported part type {part['type']!r}", param=pwhere
                )
    if not images:
        raise ApiError(400, "the request holds no image (an image_url part is required)")
    if len(images) > config.max_images:
        raise ApiError(
            400,
            f"{len(images)} images in the request; this server accepts {config.max_images}",
            code="too_many_images",
        )
    return ChatRequest(
        model,
        "\n".join(texts),
        _decode_image_url(images[0], config),
        _max_tokens(payload),
        _response_format(payload),
    )


def _decode_image_url(url: str, config: ServerConfig) -> np.ndarray:
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400,
            "remote image URLs are not supported: this server cannot reach the network; "
            "send the image inline as a data:image/jpeg;base64,... URL",
            code="remote_url",
        )
    if not url.startswith("data:") or ";base64," not in url:
        raise ApiError(400, "image_url must be a data:<mime>;base64,<data> URL", code="bad_url")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image_url holds invalid base64", code="invalid_base64") from None
    try:
        return decode_compressed(data, max_pixels=config.max_image_pixels)
    except ImageError as exc:
        code = "image_too_large" if "exceeds" in str(exc) else "invalid_image"
        raise ApiError(400, f"image_url: {exc}", code=code) from None


def _break_json(reply: str) -> str:
    """The reply with its JSON cut in the middle, as a truncated model output looks."""
    start = reply.find("[")
    if start < 0:
        return reply + '\n```json\n[{"bbox_2d": [1, 2,'
    return reply[: start + max(2, (len(reply) - start) // 2)]


def create_app(config: ServerConfig, backend: Backend) -> FastAPI:
    """The FastAPI application."""
    app = FastAPI(title="spotvlm LVLM server", version="0.1.0")
    injector = FaultInjector(config.faults)
    state = {"active": 0, "served": 0, "refused_busy": 0}

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(ApiError(400, str(exc)))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "backend": backend.name,
            "in_flight": state["active"],
            "served": state["served"],
            "refused_busy": state["refused_busy"],
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": config.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "spotvlm_ros",
                }
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        arrived = time.perf_counter()
        try:
            if config.api_key is not None:
                given = request.headers.get("authorization", "")
                if given != f"Bearer {config.api_key}":
                    raise ApiError(401, "invalid or missing API key", code="invalid_api_key")
            declared = request.headers.get("content-length")
            if (
                declared is not None
                and declared.isdigit()
                and int(declared) > config.max_request_bytes
            ):
                raise ApiError(
                    413, f"request of {declared} bytes exceeds {config.max_request_bytes}"
                )
            if state["active"] >= config.max_concurrency:
                state["refused_busy"] += 1
                busy = ApiError(
                    429,
                    f"server busy: {state['active']} requests in progress "
                    f"(limit {config.max_concurrency})",
                    kind="rate_limit_error",
                )
                busy.headers = {"Retry-After": f"{config.retry_after_s:g}"}
                raise busy
            state["active"] += 1
        except ApiError as exc:
            return error(exc)
        try:
            body = await request.body()
            if len(body) > config.max_request_bytes:
                raise ApiError(
                    413, f"request of {len(body)} bytes exceeds {config.max_request_bytes}"
                )
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
            chat_request = _parse_request(payload, config)
            fault, latency = injector.fault(), injector.latency()
            if fault is Fault.HANG:
                await asyncio.sleep(config.hang_seconds)
                raise ApiError(504, "injected hang", kind="server_error")
            try:
                made = await asyncio.to_thread(
                    partial(
                        backend.reply,
                        chat_request.image,
                        chat_request.prompt,
                        max_tokens=chat_request.max_tokens,
                        structured=chat_request.structured,
                        task=request.headers.get(TASK_HEADER, ""),
                    )
                )
            except UnsupportedRequestError as exc:
                raise ApiError(
                    400, str(exc), kind="BadRequestError", param=exc.param or None
                ) from None
            reply, finish = made.text, made.finish_reason
            await asyncio.sleep(max(0.0, latency - (time.perf_counter() - arrived)))
            if fault is Fault.ERROR:
                raise ApiError(500, "injected server error", kind="server_error")
            if fault is Fault.MALFORMED:
                reply = _break_json(reply)
            elif fault is Fault.EMPTY:
                reply = ""
            state["served"] += 1
            return JSONResponse(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": config.model_name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 0,
                        "completion_tokens": made.completion_tokens or len(reply.split()),
                        "total_tokens": made.completion_tokens or len(reply.split()),
                    },
                },
                # what was drawn, for a client (or test) checking the latency model
                headers={INJECTED_LATENCY_HEADER: f"{latency:.6f}"},
            )
        except ApiError as exc:
            return error(exc)
        except StoppingError as exc:  # the server is shutting down: no traceback for it
            LOG.info("%s", exc)
            return error(ApiError(503, str(exc), kind="server_error"))
        except Exception as exc:  # a backend failure must not take the server down
            LOG.exception("backend failure")
            return error(
                ApiError(500, f"backend failure: {type(exc).__name__}: {exc}", kind="server_error")
            )
        finally:
            state["active"] -= 1

    return app


def build_backend(args: argparse.Namespace) -> Backend:
    """The backend named on the command line."""
    from spotvlm_ros.cloud.backends import DetectorBackend, QwenBackend

    if args.backend == "detector":
        return DetectorBackend(
            Path(args.detector_model),
            task_vocabulary=args.vocabulary,
            score_threshold=args.score_threshold,
        )
    if not args.qwen_model:
        raise BackendError("--backend qwen needs --qwen-model FOLDER")
    return QwenBackend(args.qwen_model, max_new_tokens=args.max_new_tokens)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="spotvlm-lvlm-server", description=__doc__.splitlines()[0])
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default loopback; any other needs --api-key-env)",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("detector", "qwen"), default="detector")
    p.add_argument("--model-name", default=None, help="name served by /v1/models")
    p.add_argument(
        "--detector-model", default=os.environ.get("SPOTVLM_DETECTOR_MODEL", str(DEFAULT_DETECTOR))
    )
    p.add_argument("--vocabulary", default="bdd100k", help="task vocabulary of the answers")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--qwen-model", default="", help="Qwen2.5-VL folder for --backend qwen")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="--backend qwen: the longest reply; a request's max_tokens may ask for fewer",
    )
    p.add_argument("--latency-model", choices=[m.value for m in LatencyModel], default="fixed")
    p.add_argument("--latency", type=float, default=0.0, help="s; fixed value or log-normal median")
    p.add_argument("--latency-min", type=float, default=0.0)
    p.add_argument("--latency-max", type=float, default=0.0)
    p.add_argument("--latency-sigma", type=float, default=0.5)
    p.add_argument("--latency-trace", type=Path, help="file of latencies (s), one per line")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--hang-rate", type=float, default=0.0)
    p.add_argument("--malformed-rate", type=float, default=0.0)
    p.add_argument("--empty-rate", type=float, default=0.0)
    p.add_argument("--hang-seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-concurrency", type=int, default=8, help="more requests at once answer 429"
    )
    p.add_argument(
        "--retry-after", type=float, default=1.0, help="s; the Retry-After sent with a 429"
    )
    p.add_argument("--max-request-mb", type=float, default=16.0)
    p.add_argument("--max-images", type=int, default=1)
    p.add_argument(
        "--api-key-env",
        default="",
        help="name of an environment variable holding the bearer token to require",
    )
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) only listens on this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted."""
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        faults = FaultConfig(
            latency_model=LatencyModel(args.latency_model),
            latency=args.latency,
            latency_min=args.latency_min,
            latency_max=args.latency_max,
            latency_sigma=args.latency_sigma,
            trace=read_trace(args.latency_trace) if args.latency_trace else (),
            error_rate=args.error_rate,
            hang_rate=args.hang_rate,
            malformed_rate=args.malformed_rate,
            empty_rate=args.empty_rate,
            seed=args.seed,
        )
        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env)
            if not api_key:
                raise ValueError(f"--api-key-env {args.api_key_env}: that variable is not set")
        if api_key is None and not is_loopback(args.host):
            raise ValueError(
                f"--host {args.host} would let anyone on the network use the model without a "
                "key: give --api-key-env NAME (the variable holding the key), or keep the "
                "default --host 127.0.0.1"
            )
        backend = build_backend(args)
    except (ValueError, OSError, BackendError) as exc:
        print(f"spotvlm-lvlm-server: error: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(
        model_name=args.model_name or backend.name,
        max_concurrency=args.max_concurrency,
        retry_after_s=args.retry_after,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_images=args.max_images,
        api_key=api_key,
        hang_seconds=args.hang_seconds,
        faults=faults,
    )
    LOG.info(
        "backend %s, model name %s, latency %s %.2f s, listening on http://%s:%d",
        backend.name,
        config.model_name,
        args.latency_model,
        args.latency,
        args.host,
        args.port,
    )

    class Server(uvicorn.Server):
        """uvicorn's server, which also tells the backend to stop at SIGINT/SIGTERM: a
        generation in progress ends at its next token instead of holding the shutdown."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            stop = getattr(backend, "stop", None)
            if stop is not None:
                stop()
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            create_app(config, backend),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again at the end
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
