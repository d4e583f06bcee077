"""A small OpenAI-compatible LVLM for tests: it answers every chat completion from a reply
table the test writes, choosing the entry whose reference image is nearest to the image it
was sent (robust to the JPEG upload and the resize), and records each request.

    python -m test.helpers.table_lvlm --table TABLE.json --port N --record REQUESTS.jsonl

TABLE.json: ``[{"image": "<path>", "reply": "<the model's text>"}, ...]``. Each request is
recorded as one JSON line: the task header, the prompt's text, the entry answered with.
A real HTTP server on 127.0.0.1 (http.server), so the client, cloud_bridge and spotvlm-eval
talk to it exactly as to vLLM.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
THUMB = 16


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A 16 x 16 grey thumbnail, what entries are matched by."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class Table:
    """The reply table: reference thumbnails and replies."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.entries: list[tuple[str, np.ndarray, str]] = []
        for entry in json.loads(path.read_text()):
            bgr = cv2.imread(entry["image"], cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"table: cannot read {entry['image']}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.entries.append((entry["image"], thumbnail(rgb), entry["reply"]))

    def reply(self, rgb: np.ndarray) -> tuple[str, str]:
        """(the nearest entry's image, its reply)."""
        mine = thumbnail(rgb)
        image, _, text = min(self.entries, key=lambda e: float(np.abs(e[1] - mine).mean()))
        return image, text


def _image_of(payload: dict[str, Any]) -> tuple[np.ndarray, str]:
    import cv2

    image, text = None, ""
    for message in payload.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
                bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            elif part.get("type") == "text":
                text += part["text"]
    if image is None:
        raise ValueError("no image in the request")
    return image, text


def serve(table: Table, port: int, record: Path | None) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith(("/health", "/models")):
                self._send(200, {"object": "list", "data": [{"id": "table", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                image, prompt = _image_of(json.loads(body))
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "BadRequestError"}})
                return
            matched, text = table.reply(image)
            if record is not None:
                line = {
                    "task": self.headers.get("X-SpotVLM-Task", ""),
                    "prompt": prompt,
                    "matched": matched,
                    "time": time.time(),
                }
                with lock, record.open("a") as out:
                    out.write(json.dumps(line) + "\n")
            self._send(
                200,
                {
                    "id": "chatcmpl-table",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "table",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextmanager
def table_lvlm(table: list[dict[str, str]], folder: Path) -> Iterator[tuple[str, Path]]:
    """Run the server as its own process on a free port until the block ends; yields its
    base URL (…/v1) and the file of recorded requests."""
    from test.helpers.servers import free_port

    port = free_port()
    table_file, record = folder / "table.json", folder / "requests.jsonl"
    table_file.write_text(json.dumps(table))
    record.write_text("")
    log = (folder / "table_lvlm.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "test.helpers.table_lvlm",
            "--table",
            str(table_file),
            "--port",
            str(port),
            "--record",
            str(record),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60.0
        while True:  # ready when it answers, not after a fixed time
            if proc.poll() is not None:
                raise RuntimeError((folder / "table_lvlm.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the table LVLM did not start") from None
                time.sleep(0.1)
        yield url, record
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def requests_of(record: Path) -> list[dict[str, Any]]:
    """The requests the server recorded."""
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record", type=Path)
    args = p.parse_args()
    serve(Table(args.table), args.port, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
