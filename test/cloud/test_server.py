"""The LVLM server as a real process, over real HTTP, with the official SDK and our client."""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from spotvlm_ros.cloud.client import LvlmClient, LvlmClientConfig, LvlmOutcome, OutcomeKind
from test.helpers.servers import lvlm_server

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[3] / "shared"
DETECTOR = SHARED / "models" / "centernet_mobilenetv3_coco.onnx"
Q = "Which objects are in the image?"

if not DETECTOR.is_file():
    pytest.skip(f"detector weights not found at {DETECTOR}", allow_module_level=True)


def bdd_frames() -> list[np.ndarray]:
    files = sorted(
        glob.glob(str(SHARED / "data" / "bdd100k_mot" / "images" / "**" / "*.jpg"), recursive=True)
    )
    return [np.array(Image.open(f).convert("RGB")) for f in files]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    found = bdd_frames()
    if not found:
        pytest.skip("no BDD100K frames in ../shared/data")
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with lvlm_server("--detector-model", str(DETECTOR)) as url:
        yield url


def ask_many(
    url: str, images: list[np.ndarray], concurrency: int = 1, **config: object
) -> list[LvlmOutcome]:
    async def run() -> list[LvlmOutcome]:
        client = LvlmClient(
            LvlmClientConfig(base_url=url, model="detector", max_in_flight=concurrency, **config)  # type: ignore[arg-type]
        )
        try:
            sem = asyncio.Semaphore(concurrency)

            async def one(image: np.ndarray) -> LvlmOutcome:
                async with sem:
                    return await client.ask(image, Q)

            return list(await asyncio.gather(*(one(i) for i in images)))
        finally:
            await client.close()

    return asyncio.run(run())


def data_url(payload: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def chat_body(url: str, **extra: object) -> dict[str, object]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": Q}]
    return {"model": "detector", "messages": [{"role": "user", "content": content}], **extra}


def test_official_openai_sdk_as_a_plain_user(server: str, frames: list[np.ndarray]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="unused")
    try:
        assert [m.id for m in client.models.list().data] == ["detector:centernet_mobilenetv3_coco"]
        reply = client.chat.completions.create(
            model="detector:centernet_mobilenetv3_coco",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": data_url(jpeg(frames[0][:, :, ::-1]))},
                        },
                        {"type": "text", "text": Q},
                    ],
                }
            ],
        )
    finally:
        client.close()
    text = reply.choices[0].message.content
    assert reply.object == "chat.completion"
    assert "car" in text
    assert '"bbox_2d"' in text


def test_project_client_finds_cars_in_bdd100k(server: str, frames: list[np.ndarray]) -> None:
    outcomes = ask_many(server, frames)
    assert all(o.kind is OutcomeKind.OK for o in outcomes), [o.error for o in outcomes]
    with_cars = [o for o in outcomes if "car" in o.labels]
    assert len(with_cars) >= len(frames) // 2
    for outcome, frame in zip(outcomes, frames, strict=True):
        for roi in outcome.rois:
            assert 0 <= roi.box.x1 < roi.box.x2 <= frame.shape[1]
            assert 0 <= roi.box.y1 < roi.box.y2 <= frame.shape[0]
    assert any(r.label == "car" for o in outcomes for r in o.rois)


def drawn_latencies(url: str, frames: list[np.ndarray]) -> list[float]:
    """Each request's latency as the server drew it (its response header)."""
    from spotvlm_ros.cloud.server import INJECTED_LATENCY_HEADER

    drawn = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for frame in frames:
            reply = http.post("/chat/completions", json=chat_body(data_url(jpeg(frame))))
            assert reply.status_code == 200, reply.text
            drawn.append(float(reply.headers[INJECTED_LATENCY_HEADER]))
    return drawn


def test_injected_latency_is_drawn_as_configured(frames: list[np.ndarray]) -> None:
    """Every request is given the configured latency (what the reply reports it drew; the
    time it takes on this machine is not asserted)."""
    with lvlm_server("--detector-model", str(DETECTOR), "--latency", "1.0") as url:
        outcomes = ask_many(url, frames[:3])
        drawn = drawn_latencies(url, frames[:2])
    assert all(o.kind is OutcomeKind.OK for o in outcomes), outcomes
    assert drawn == [1.0, 1.0], drawn


def test_uniform_latency_is_seeded_and_repeats(frames: list[np.ndarray]) -> None:
    """The same seed draws the same latencies (compared as drawn: the time a reply takes
    adds this machine's own processing, which varies)."""
    runs = []
    for _ in range(2):
        with lvlm_server(
            "--detector-model",
            str(DETECTOR),
            "--latency-model",
            "uniform",
            "--latency-min",
            "0.2",
            "--latency-max",
            "1.2",
            "--seed",
            "7",
        ) as url:
            runs.append(drawn_latencies(url, frames[:4]))
    assert runs[0] == runs[1]
    drawn = runs
    assert all(0.2 <= d <= 1.2 for d in drawn[0]) and len(set(drawn[0])) == 4


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        ("--error-rate", OutcomeKind.HTTP_ERROR),
        ("--hang-rate", OutcomeKind.TIMEOUT),
        ("--malformed-rate", OutcomeKind.OK),  # the sentence survives; the JSON is reported
        ("--empty-rate", OutcomeKind.UNPARSABLE),
    ],
)
def test_each_injected_fault_surfaces_as_its_typed_result(
    flag: str, kind: OutcomeKind, frames: list[np.ndarray]
) -> None:
    # a short request timeout only where a hang is injected: a cold first request on a busy
    # machine must not turn the other faults into timeouts
    timeout = 1.5 if flag == "--hang-rate" else 60.0
    with lvlm_server("--detector-model", str(DETECTOR), flag, "1.0") as url:
        [outcome] = ask_many(url, frames[:1], timeout=timeout)
    assert outcome.kind is kind, outcome
    if flag == "--error-rate":
        assert outcome.http_status == 500
    if flag == "--malformed-rate":
        assert outcome.problems
        assert "car" in outcome.labels


def test_concurrency_limit_answers_429(frames: list[np.ndarray]) -> None:
    with lvlm_server(
        "--detector-model", str(DETECTOR), "--max-concurrency", "1", "--latency", "1.0"
    ) as url:
        outcomes = ask_many(url, frames[:3], concurrency=3)
    kinds = sorted(o.kind.value for o in outcomes)
    assert kinds.count("ok") == 1
    assert kinds.count("rejected") == 2
    assert {o.http_status for o in outcomes if o.kind is OutcomeKind.REJECTED} == {429}


def test_bearer_token_is_checked(frames: list[np.ndarray]) -> None:
    env = {"SERVER_KEY": "tok-123", "CLIENT_KEY": "tok-123", "WRONG_KEY": "nope"}
    with lvlm_server(
        "--detector-model", str(DETECTOR), "--api-key-env", "SERVER_KEY", env=env
    ) as url:
        import os

        os.environ.update(env)
        try:
            [good] = ask_many(url, frames[:1], api_key_env="CLIENT_KEY")
            [bad] = ask_many(url, frames[:1], api_key_env="WRONG_KEY")
        finally:
            for key in env:
                os.environ.pop(key, None)
    assert good.kind is OutcomeKind.OK
    assert (bad.kind, bad.http_status) == (OutcomeKind.REJECTED, 401)


def test_request_size_limit(frames: list[np.ndarray]) -> None:
    with lvlm_server("--detector-model", str(DETECTOR), "--max-request-mb", "0.01") as url:
        [outcome] = ask_many(url, frames[:1])
    assert (outcome.kind, outcome.http_status) == (OutcomeKind.REJECTED, 413)


def test_server_refuses_to_start_without_the_model(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="detector model not found"),
        lvlm_server("--detector-model", str(tmp_path / "missing.onnx")),
    ):
        pass


def test_a_non_loopback_bind_needs_an_api_key() -> None:
    import subprocess
    import sys

    refused = subprocess.run(
        [sys.executable, "-m", "spotvlm_ros.cloud.server", "--host", "0.0.0.0", "--port", "9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--host 0.0.0.0 would let anyone on the network use the model" in refused.stderr
    # with a key it is allowed (it then starts listening; loopback is where tests reach it)
    with lvlm_server(
        "--host", "0.0.0.0", "--api-key-env", "BIND_KEY", env={"BIND_KEY": "k"}
    ) as url:
        assert url.startswith("http://127.0.0.1:")


BAD_INPUTS = {
    "not json": b"{this is not json",
    "body not an object": b"[1, 2, 3]",
    "missing model": {"messages": [{"role": "user", "content": "hi"}]},
    "missing messages": {"model": "detector"},
    "messages not a list": {"model": "detector", "messages": "hello"},
    "content wrong type": {"model": "detector", "messages": [{"role": "user", "content": 42}]},
    "part without type": {"model": "detector", "messages": [{"role": "user", "content": [{}]}]},
    "no image": {"model": "detector", "messages": [{"role": "user", "content": "hi"}]},
    "invalid base64": chat_body("data:image/jpeg;base64,@@not-base64@@"),
    "non-image": chat_body(data_url(b"just some text, not an image", "text/plain")),
    "remote url": chat_body("https://example.com/frame.jpg"),
    "too many images": {
        "model": "detector",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(jpeg(np.zeros((8, 8, 3), np.uint8)))},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(jpeg(np.zeros((8, 8, 3), np.uint8)))},
                    },
                ],
            }
        ],
    },
    "streaming": chat_body(data_url(jpeg(np.zeros((8, 8, 3), np.uint8))), stream=True),
}


def test_bad_inputs_get_4xx_with_openai_error_bodies_and_the_server_keeps_serving(
    server: str, frames: list[np.ndarray]
) -> None:
    huge = jpeg(np.zeros((4200, 4200, 3), np.uint8))  # 17.6 Mpx > the 4096^2 default limit
    cases = {**BAD_INPUTS, "huge image": chat_body(data_url(huge))}
    with httpx.Client(base_url=server, timeout=30) as http:
        for name, body in cases.items():
            if isinstance(body, bytes):
                response = http.post(
                    "/chat/completions", content=body, headers={"content-type": "application/json"}
                )
            else:
                response = http.post("/chat/completions", json=body)
            assert 400 <= response.status_code < 500, (name, response.text)
            error = response.json()["error"]
            assert error["message"], name
            assert error["type"] == "invalid_request_error", name
        assert http.get("/nope").json()["error"]["message"] == "Not Found"
    [after] = ask_many(server, frames[:1])
    assert after.kind is OutcomeKind.OK


def test_load_200_requests_at_concurrency_8_without_errors_or_leaks(
    frames: list[np.ndarray],
) -> None:
    """A bounded load check (the figures for docs/benchmarks.md come from
    scripts/bench_lvlm_server.py, which runs the same load and reports p50/p95)."""
    with lvlm_server("--detector-model", str(DETECTOR), "--max-concurrency", "8") as url:
        start = time.monotonic()
        outcomes = ask_many(url, [frames[i % len(frames)] for i in range(200)], concurrency=8)
        elapsed = time.monotonic() - start
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        established = _established_connections_to(port)
    assert [o.kind for o in outcomes].count(OutcomeKind.OK) == 200, {o.error for o in outcomes}
    assert health["in_flight"] == 0
    assert health["served"] >= 200
    assert established == 0, f"{established} connections left open after the client closed"
    assert elapsed < 240


def _established_connections_to(port: int) -> int:
    """ESTABLISHED TCP connections from this process's side to ``port`` (Linux /proc)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


def test_response_format_json_schema_end_to_end(server: str, frames: list[np.ndarray]) -> None:
    """The bridge's structured_output against this server: asked through response_format,
    answered with the bare JSON object of the schema, parsed into answer and ROIs."""
    from spotvlm_ros.cloud.client import RESPONSE_FORMAT

    with httpx.Client(base_url=server, timeout=30) as http:
        url = data_url(jpeg(frames[0][:, :, ::-1]))
        reply = http.post("/chat/completions", json=chat_body(url, response_format=RESPONSE_FORMAT))
        assert reply.status_code == 200, reply.text
        content = json.loads(reply.json()["choices"][0]["message"]["content"])  # no fence
        assert set(content) == {"answer", "objects"} and content["objects"]
        assert all(len(o["bbox_2d"]) == 4 and o["label"] for o in content["objects"])
        for bad in ({"type": "xml"}, {"type": "json_schema", "json_schema": {"schema": {}}}):
            refused = http.post("/chat/completions", json=chat_body(url, response_format=bad))
            assert refused.status_code == 400, bad
            assert refused.json()["error"]["param"] == "response_format"
    outcomes = ask_many(server, frames[:3], structured_output=True)
    assert all(o.kind is OutcomeKind.OK and o.rois for o in outcomes), outcomes
    assert outcomes[0].answer.startswith("I can see")


def test_qwen_backend_over_http_reports_a_reply_cut_by_max_tokens() -> None:
    """--backend qwen (the tiny model here; a real folder for a user) answers over HTTP; its
    token limit cuts a reply as "length", which the client reports as truncated; it refuses
    response_format (no constrained decoding), and the client then asks plainly."""
    from spotvlm_ros.cloud.client import LvlmClient, LvlmClientConfig
    from test.helpers.models import tiny_model_dir

    image = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    args = ("--backend", "qwen", "--qwen-model", str(tiny_model_dir()), "--max-new-tokens", "6")
    with lvlm_server(*args, timeout=120.0) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            body = chat_body(data_url(jpeg(image)), max_tokens=3)
            reply = http.post("/chat/completions", json=body).json()
            assert reply["choices"][0]["finish_reason"] == "length"
            assert reply["usage"]["completion_tokens"] == 3
            assert isinstance(reply["choices"][0]["message"]["content"], str)  # noise, maybe ""

        async def run() -> tuple[LvlmOutcome, str]:
            config = LvlmClientConfig(base_url=url, model="qwen", structured_output=True)
            client = LvlmClient(config)
            try:
                return await client.ask(image, Q), client.structured_refused
            finally:
                await client.close()

        out, refused = asyncio.run(run())
        assert "no constrained decoding" in refused
        assert out.truncated  # the random model runs into the server's 6-token limit
        assert out.kind in (OutcomeKind.OK, OutcomeKind.UNPARSABLE)  # noise: maybe no text
        assert "cut the reply" in (out.error + " ".join(out.problems))
