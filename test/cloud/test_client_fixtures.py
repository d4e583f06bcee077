"""The client against replies in the exact shapes vLLM, SGLang and Ollama return.

The fixtures follow the servers' own response models (fixtures/README.md names the file and
commit each shape was read from); a real HTTP server on loopback serves them, so the
client's whole path (openai SDK, HTTP, parsing) is exercised.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from spotvlm_ros.cloud.client import LvlmClient, LvlmClientConfig, OutcomeKind
from spotvlm_ros.core.types import Box
from test.helpers.servers import write_chunked

FIXTURES = Path(__file__).parent / "fixtures"
FRAME = np.zeros((720, 1280, 3), np.uint8)  # sent as 1288x728 (multiples of 28)


class _Canned(BaseHTTPRequestHandler):
    reply: ClassVar[tuple[int, bytes]] = (200, b"{}")
    queued: ClassVar[list[tuple[int, bytes]]] = []  # replies served first, in order
    extra_headers: ClassVar[dict[str, str]] = {}
    requests: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        type(self).requests.append(json.loads(self.rfile.read(length)))
        status, body = type(self).queued.pop(0) if type(self).queued else type(self).reply
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for name, value in type(self).extra_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, type[_Canned]]]:
    handler = type("Handler", (_Canned,), {"requests": [], "queued": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def ask(base_url: str, **config: object) -> object:
    async def run() -> object:
        client = LvlmClient(LvlmClientConfig(base_url=base_url, model="m", **config))  # type: ignore[arg-type]
        try:
            return await client.ask(FRAME, "Which objects are in the image?")
        finally:
            await client.close()

    return asyncio.run(run())


def serve(handler: type[_Canned], name: str, status: int = 200) -> None:
    handler.reply = (status, (FIXTURES / name).read_bytes())


def test_vllm_fenced_qwen_reply(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "vllm_qwen25vl_fenced.json")
    out = ask(url)
    assert out.kind is OutcomeKind.OK
    assert out.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    assert out.answer == "There are two cars and a pedestrian."
    assert out.labels == {"car", "pedestrian"}
    assert [r.label for r in out.rois] == ["car", "car", "pedestrian"]  # person -> pedestrian
    sx, sy = 1280 / 1288, 720 / 728
    assert out.rois[0].box == Box(112 * sx, 280 * sy, 448 * sx, 532 * sy)
    assert out.rois[1].box.x2 == 1280.0  # 1400 px of the sent image: clipped to the frame
    # what went over the wire: one JPEG data URL of the resized frame and the grounding prompt
    parts = handler.requests[0]["messages"][0]["content"]  # type: ignore[index]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "bbox_2d" in parts[1]["text"]


def test_sglang_reply_with_prose_and_out_of_range_box(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "sglang_qwen25vl_prose.json")
    out = ask(url)
    assert out.kind is OutcomeKind.OK
    assert out.answer.startswith("Sure! Here are the objects I found:")
    assert out.labels == {"truck", "bicycle"}
    bicycle = out.rois[1]
    assert bicycle.box.x1 == 0.0
    assert bicycle.box.y2 == 720.0
    assert any("clipped" in p for p in out.problems)


def test_ollama_truncated_reply_keeps_the_complete_box(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "ollama_openai_truncated.json")
    out = ask(url)
    assert out.kind is OutcomeKind.OK
    assert out.model == "qwen2.5vl:72b"
    assert out.truncated  # Ollama's finish_reason "length"
    assert [r.label for r in out.rois] == ["bus"]
    assert any("recovered 1" in p for p in out.problems)


def test_empty_content_is_unparsable(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "vllm_empty_content.json")
    assert ask(url).kind is OutcomeKind.UNPARSABLE


@pytest.mark.parametrize(
    ("name", "status", "kind", "says"),
    [
        ("vllm_error_400_context.json", 400, OutcomeKind.REJECTED, "maximum context length"),
        ("vllm_0_10_error_400_flat.json", 400, OutcomeKind.REJECTED, "maximum context length"),
        ("sglang_error_400_flat.json", 400, OutcomeKind.REJECTED, "schema_ is required"),
        ("vllm_error_404_model.json", 404, OutcomeKind.HTTP_ERROR, "The model `m` does not exist"),
        ("ollama_error_404_model.json", 404, OutcomeKind.HTTP_ERROR, "model 'qwen9:99b' not found"),
    ],
)
def test_each_servers_error_body_is_a_typed_outcome_with_its_message(
    canned: tuple[str, type[_Canned]], name: str, status: int, kind: OutcomeKind, says: str
) -> None:
    """vLLM >= 0.10.1 and Ollama nest the error under "error"; vLLM <= 0.10.0 and SGLang
    send it flat with "object": "error": the server's message reaches the outcome either way."""
    url, handler = canned
    serve(handler, name, status=status)
    out = ask(url)
    assert out.kind is kind
    assert out.http_status == status
    assert says in out.error


def test_ollama_fenced_reply(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "ollama_openai_fenced.json")
    out = ask(url)
    assert out.kind is OutcomeKind.OK and not out.truncated
    assert out.model == "qwen2.5vl:7b"
    assert [r.label for r in out.rois] == ["car", "car", "pedestrian"]


def test_reasoning_beside_the_content_is_not_the_answer(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "vllm_qwen25vl_reasoning.json")
    out = ask(url)
    assert out.kind is OutcomeKind.OK
    assert out.answer == "There are two cars and a pedestrian."
    assert len(out.rois) == 3


def test_a_reply_that_is_all_reasoning_says_so(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    serve(handler, "vllm_reasoning_only.json")
    out = ask(url)
    assert out.kind is OutcomeKind.UNPARSABLE
    assert "only reasoning" in out.error and "token limit" in out.error


def test_a_reply_cut_by_the_token_limit_is_reported_as_cut(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    serve(handler, "vllm_qwen25vl_length_cut.json")
    out = ask(url, max_tokens=64)
    assert out.kind is OutcomeKind.OK and out.truncated
    assert [r.label for r in out.rois] == ["bus"]  # the complete box, the cut one dropped
    assert "token limit cut the reply (max_tokens 64 asked" in out.problems[0]


def test_structured_output_asks_with_a_json_schema_and_reads_the_bare_object(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    serve(handler, "vllm_response_format_json.json")
    out = ask(url, structured_output=True)
    assert out.kind is OutcomeKind.OK
    assert out.answer == "A bus and a car."
    assert [r.label for r in out.rois] == ["bus", "car"]
    request = handler.requests[0]
    spec = request["response_format"]  # type: ignore[index]
    assert spec["type"] == "json_schema" and spec["json_schema"]["name"]  # vLLM needs a name
    assert spec["json_schema"]["schema"]["required"] == ["answer", "objects"]


def test_a_server_that_refuses_response_format_is_asked_plainly_from_then_on(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    handler.queued = [(400, (FIXTURES / "vllm_error_400_response_format.json").read_bytes())]
    serve(handler, "vllm_qwen25vl_fenced.json")

    async def run() -> tuple[object, object, LvlmClient]:
        config = LvlmClientConfig(base_url=url, model="m", structured_output=True)
        client = LvlmClient(config)
        try:
            return await client.ask(FRAME, "q"), await client.ask(FRAME, "q"), client
        finally:
            await client.close()

    first, second, client = asyncio.run(run())
    assert first.kind is OutcomeKind.OK and second.kind is OutcomeKind.OK  # type: ignore[attr-defined]
    assert "response_format" in client.structured_refused
    sent = ["response_format" in r for r in handler.requests]
    assert sent == [True, False, False]  # refused once, the frame asked again, then plainly


def test_relative_coordinates_option(canned: tuple[str, type[_Canned]]) -> None:
    url, handler = canned
    body = json.loads((FIXTURES / "vllm_qwen25vl_fenced.json").read_text())
    body["choices"][0]["message"]["content"] = '[{"bbox_2d": [0, 0, 500, 1000], "label": "car"}]'
    handler.reply = (200, json.dumps(body).encode())
    from spotvlm_ros.core.parsing import Coordinates

    out = ask(url, coordinates=Coordinates.RELATIVE_1000)
    assert out.rois[0].box == Box(0, 0, 640, 720)


def test_refused_connection_is_a_typed_outcome() -> None:
    out = ask("http://127.0.0.1:9/v1")
    assert out.kind is OutcomeKind.CONNECTION
    assert out.error


def test_api_key_comes_from_the_named_variable(
    canned: tuple[str, type[_Canned]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = canned
    serve(handler, "vllm_qwen25vl_fenced.json")
    seen: list[str] = []
    original = _Canned.do_POST

    def capture(self: _Canned) -> None:
        seen.append(self.headers.get("authorization", ""))
        original(self)

    monkeypatch.setattr(handler, "do_POST", capture)
    monkeypatch.setenv("MY_LVLM_KEY", "s3cret")
    ask(url, api_key_env="MY_LVLM_KEY")
    assert seen == ["Bearer s3cret"]


def test_bad_frame_is_a_typed_outcome(canned: tuple[str, type[_Canned]]) -> None:
    url, _ = canned

    async def run() -> object:
        client = LvlmClient(LvlmClientConfig(base_url=url, model="m"))
        try:
            return await client.ask(np.zeros((0, 0, 3), np.uint8), "q")
        finally:
            await client.close()

    assert asyncio.run(run()).kind is OutcomeKind.BAD_INPUT


def test_bad_client_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        LvlmClientConfig(timeout=0)
    with pytest.raises(
        ValueError, match="takes the vocabularies bdd100k, nuscenes, coco, not 'kitti'"
    ):
        LvlmClientConfig(task_vocabulary="kitti")
    with pytest.raises(ValueError, match="unknown task 'pose'"):
        LvlmClientConfig(task="pose")
    with pytest.raises(ValueError, match="task 'gesture' takes the vocabularies hagrid, ipn"):
        LvlmClientConfig(task="gesture", task_vocabulary="coco")


@pytest.fixture
def https_canned(tmp_path: Path) -> Iterator[tuple[str, Path, type[_Canned]]]:
    """The canned server behind TLS with a self-signed certificate for 127.0.0.1."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    handler = type("Handler", (_Canned,), {"requests": [], "queued": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1", cert, handler
    finally:
        server.shutdown()
        server.server_close()


def test_https_certificates_are_verified_and_a_ca_bundle_can_be_given(
    https_canned: tuple[str, Path, type[_Canned]],
) -> None:
    url, cert, handler = https_canned
    serve(handler, "vllm_qwen25vl_fenced.json")
    refused = ask(url)  # a self-signed certificate is not trusted by default
    assert refused.kind is OutcomeKind.CONNECTION, refused
    assert handler.requests == []
    trusted = ask(url, ca_bundle=str(cert))
    assert trusted.kind is OutcomeKind.OK, trusted
    with pytest.raises(ValueError, match="no such file"):
        ask(url, ca_bundle=str(cert) + ".missing")


def test_the_api_key_never_appears_in_an_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library that quotes the key in its exception (as some proxies echo headers) does
    not carry it into the outcome, which nodes log and publish."""
    monkeypatch.setenv("MY_LVLM_KEY", "sk-canary-123456")

    async def failure() -> object:
        client = LvlmClient(LvlmClientConfig(api_key_env="MY_LVLM_KEY"))
        try:
            return client._failure(RuntimeError("rejected key sk-canary-123456 for user"), 0.1)
        finally:
            await client.close()

    out = asyncio.run(failure())
    assert "sk-canary" not in out.error and "rejected key *** for user" in out.error


def test_a_dead_replica_is_failed_over_within_the_same_request_and_skipped_after(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    serve(handler, "vllm_qwen25vl_fenced.json")
    dead = "http://127.0.0.1:9/v1"

    async def run() -> tuple[list[object], LvlmClient]:
        client = LvlmClient(LvlmClientConfig(base_url=f"{dead},{url}", model="m"))
        try:
            return [await client.ask(FRAME, "q") for _ in range(3)], client
        finally:
            await client.close()

    outcomes, client = asyncio.run(run())
    assert [o.kind for o in outcomes] == [OutcomeKind.OK] * 3  # type: ignore[attr-defined]
    assert {o.endpoint for o in outcomes} == {url}  # type: ignore[attr-defined]
    down = client.pool.endpoints[0]
    assert down.url == dead and down.health.value == "down" and down.failed == 1
    assert len(handler.requests) == 3  # the live one asked once per frame


def test_a_429_with_retry_after_is_back_pressure_not_a_blind_retry(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    error = {"message": "server busy", "type": "rate_limit_error", "param": None, "code": None}
    body = json.dumps({"error": error}).encode()
    handler.reply = (429, body)
    handler.extra_headers = {"Retry-After": "7"}

    async def run() -> tuple[object, object]:
        client = LvlmClient(LvlmClientConfig(base_url=url, model="m", user="robot1/CAM_FRONT"))
        try:
            return await client.ask(FRAME, "q"), await client.ask(FRAME, "q")
        finally:
            await client.close()

    first, second = asyncio.run(run())
    assert first.kind is OutcomeKind.REJECTED and first.retry_after == 7.0  # type: ignore[attr-defined]
    # the only replica is busy for 7 s: the next frame is not sent, and says when to retry
    assert second.kind is OutcomeKind.REJECTED  # type: ignore[attr-defined]
    assert 6.0 < second.retry_after <= 7.0  # type: ignore[attr-defined]
    assert "no LVLM endpoint usable now" in second.error  # type: ignore[attr-defined]
    assert len(handler.requests) == 1
    assert handler.requests[0]["user"] == "robot1/CAM_FRONT"  # what gateways rate-limit by


def chat_reply(content: str) -> bytes:
    """An OpenAI chat completion holding ``content``."""
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]})


def boxes(count: int) -> str:
    """A grounding reply with ``count`` valid boxes, scores rising with the index."""
    objects = [
        {"bbox_2d": [i % 1000, 10, i % 1000 + 20, 40], "label": "car", "score": i / count}
        for i in range(count)
    ]
    return "Cars.\n```json\n" + json.dumps(objects) + "\n```"


def test_a_huge_reply_is_not_read_and_says_why(canned: tuple[str, type[_Canned]]) -> None:
    """10 MB of valid boxes: refused by its Content-Length before the body is read."""
    url, handler = canned
    handler.reply = (200, chat_reply(boxes(240_000)).encode())
    assert len(handler.reply[1]) > 10_000_000
    outcome = ask(url)
    assert outcome.kind is OutcomeKind.UNPARSABLE, outcome  # type: ignore[attr-defined]
    assert "over max_reply_bytes (262144)" in outcome.error  # type: ignore[attr-defined]


def test_a_huge_chunked_reply_is_cut_while_reading(canned: tuple[str, type[_Canned]]) -> None:
    """No Content-Length (chunked, as a streaming proxy sends it): cut at the limit."""
    url, handler = canned
    body = chat_reply("x" * 2_000_000).encode()

    def do_post(self: _Canned) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        write_chunked(self.wfile, body)

    handler.do_POST = do_post  # type: ignore[method-assign]
    outcome = ask(url, max_reply_bytes=100_000)
    assert outcome.kind is OutcomeKind.UNPARSABLE, outcome  # type: ignore[attr-defined]
    assert "exceeds max_reply_bytes (100000 bytes)" in outcome.error  # type: ignore[attr-defined]


def test_rois_beyond_max_rois_are_cut_to_the_highest_scoring(
    canned: tuple[str, type[_Canned]],
) -> None:
    url, handler = canned
    handler.reply = (200, chat_reply(boxes(500)).encode())
    outcome = ask(url, max_reply_bytes=4_000_000, max_rois=100)
    assert outcome.kind is OutcomeKind.OK  # type: ignore[attr-defined]
    assert len(outcome.rois) == 100 and outcome.rois_cut == 400  # type: ignore[attr-defined]
    assert min(r.score for r in outcome.rois) >= 400 / 500  # type: ignore[attr-defined]
    assert any("kept the 100 highest-scoring" in p for p in outcome.problems)  # type: ignore[attr-defined]


def test_a_compressed_reply_is_not_inflated_past_the_limit(
    canned: tuple[str, type[_Canned]],
) -> None:
    """The client asks for identity; a server that gzips anyway (2 MB of boxes in a few KB)
    is refused, since the size after decoding could not be bounded."""
    import gzip

    url, handler = canned
    same = [{"bbox_2d": [10, 10, 60, 40], "label": "car"}] * 40_000
    body = gzip.compress(chat_reply("```json\n" + json.dumps(same) + "\n```").encode())
    asked: list[str] = []

    def do_post(self: _Canned) -> None:
        asked.append(self.headers.get("accept-encoding", ""))
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    handler.do_POST = do_post  # type: ignore[method-assign]
    assert len(body) < 262144
    outcome = ask(url)
    assert asked == ["identity"]
    assert outcome.kind is OutcomeKind.UNPARSABLE, outcome  # type: ignore[attr-defined]
    assert "gzip-encoded although identity was asked for" in outcome.error  # type: ignore[attr-defined]
