"""A hostile LVLM server against the running graph (real HTTP, real DDS): replies of 10 MB
(with and without a Content-Length), 500 valid boxes, invalid boxes of every kind. Each is
bounded, counted and said; no node dies; every frame gets its one answer, and the frames
after them are answered with the LVLM's good replies again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from test.helpers.graph import Probe, logs, node_log, real_frames, running_graph
from test.helpers.models import tiny_model_dir
from test.helpers.servers import write_chunked

pytestmark = pytest.mark.integration


def completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps(
        {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}
    ).encode()


def grounding(objects: list[dict[str, object]]) -> str:
    return "Cars ahead.\n```json\n" + json.dumps(objects) + "\n```"


GOOD = completion(grounding([{"bbox_2d": [10, 10, 120, 90], "label": "car"}]))


def hostile_replies() -> list[tuple[str, bytes]]:
    """The bad replies, in the order the server sends them."""
    return [
        # 240,000 valid boxes, ~10 MB, with its Content-Length
        (
            "length",
            completion(
                grounding(
                    [
                        {"bbox_2d": [i % 200, 5, i % 200 + 9, 20], "label": "car"}
                        for i in range(240_000)
                    ]
                )
            ),
        ),
        ("chunked", completion("lorem ipsum " * 900_000)),  # ~10 MB of text, no Content-Length
        (
            "length",
            completion(
                grounding(
                    [
                        {
                            "bbox_2d": [i % 300, 10, i % 300 + 30, 60],
                            "label": "car",
                            "score": i / 500,
                        }
                        for i in range(500)
                    ]
                )
            ),
        ),
        (
            "length",
            completion(
                grounding(
                    [
                        {"bbox_2d": [-90, -90, -10, -10], "label": "car"},
                        {"bbox_2d": [float("nan"), 0, 10, 10], "label": "car"},
                        {"bbox_2d": ["a", "b", "c", "d"], "label": "car"},
                        {"bbox_2d": [1, 2, 3], "label": "car"},
                        {"bbox_2d": [0, 0, 1e12, 1e12], "label": "car"},
                        {"bbox_2d": [10, 10, 120, 90], "label": "car"},
                    ]
                )
            ),
        ),
    ]


class Hostile(BaseHTTPRequestHandler):
    """Serves ``replies`` in order, then GOOD; counts requests."""

    replies: ClassVar[list[tuple[str, bytes]]] = []
    served: ClassVar[list[str]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.lock:
            index = len(self.served)
            replies = self.replies
            mode, body = replies[index] if index < len(replies) else ("length", GOOD)
            self.served.append(mode)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        try:
            if mode == "chunked":
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                write_chunked(self.wfile, body)
            else:
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    attributes = {"replies": hostile_replies(), "served": [], "lock": threading.Lock()}
    handler = type("Handler", (Hostile,), attributes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_lvlm_replies_are_bounded_counted_and_said(hostile: str, tmp_path: Path) -> None:
    from spotvlm_ros.ros.convert import stamp_of

    log_dir = tmp_path / "logs"
    probe = Probe("hostile_probe", overlays=False, diagnostics=True)
    args = (
        *("--model-path", str(tiny_model_dir()), "--base-url", hostile, "--no-check-lvlm"),
        *("--lvlm-model", "m", "--deadline", "3.0"),
        *("--set", "svlm_node.max_new_tokens=4", "--set", "cloud_bridge.upload_mode=every_frame"),
    )
    try:
        with running_graph(log_dir, *args) as runner:
            probe.wait_for_graph(warm_up=real_frames(1)[0])
            frames = real_frames(4)
            stamps: list[int] = []
            status = "cloud_bridge: LVLM"

            def good_after_hostile() -> bool:
                served = int(probe.diagnostic_value(status, "outcome_ok") or 0)
                return served >= 3 and len(stamps) > 0

            # frames until every hostile reply has been served and good ones came after
            for _ in range(60):
                stamps += probe.publish_at_rate(frames, 2.0, stamps[-1] if stamps else None)
                if good_after_hostile():
                    break
            probe.wait_for(good_after_hostile, 60.0, "good LVLM answers after the hostile ones")
            probe.wait_for(
                lambda: set(stamps) <= set(probe.answer_arrivals), 60.0, "an answer per frame"
            )
            answers = [a for a in probe.answers if stamp_of(a.header.stamp) in set(stamps)]
            assert sorted(stamp_of(a.header.stamp) for a in answers) == sorted(stamps)
            values = {
                k: probe.diagnostic_value(status, k)
                for k in (
                    "rois_cut",
                    "replies_too_large",
                    "outcome_unparsable",
                    "boxes_dropped_outside_image",
                )
            }
            assert runner.poll() is None, logs(log_dir)
        ok = [r for r in probe.lvlm if r.status == 0]
        assert max(len(r.rois) for r in ok) <= 100  # what went onto the topic is bounded
        assert any(len(r.rois) == 100 for r in ok)  # the 500-box reply, cut
        assert any(r.labels == ["car"] and len(r.rois) == 1 for r in ok)  # good ones after
    finally:
        probe.close()
    assert int(values["rois_cut"] or 0) >= 400, values
    assert values["replies_too_large"] == "2", values  # with and without Content-Length
    assert int(values["outcome_unparsable"] or 0) >= 2, values
    assert int(values["boxes_dropped_outside_image"] or 0) >= 1, values
    text = node_log(log_dir, "cloud_bridge")
    assert "refused: the reply is" in text and "over max_reply_bytes (262144)" in text
    assert "kept the 100 highest-scoring (max_rois)" in text
    assert "invalid box(es) dropped" in text and "not_finite 1" in text
    assert "process has died" not in (log_dir / "runner.log").read_text()
