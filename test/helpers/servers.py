"""Start the package's LVLM server as a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def lvlm_server(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0, port: int | None = None
) -> Iterator[str]:
    """Run ``spotvlm-lvlm-server ARGS`` until the block ends; yields its base URL (…/v1)."""
    port = port or free_port()
    log = open(ROOT / "log" / f"lvlm-server-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spotvlm_ros.cloud.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + timeout
        while True:  # wait for readiness, not a fixed time
            if proc.poll() is not None:
                log.flush()
                raise RuntimeError(
                    f"LVLM server exited with {proc.returncode}: "
                    + (ROOT / "log" / f"lvlm-server-{port}.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"LVLM server not ready within {timeout} s") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc, signal.SIGTERM, timeout=10.0)
        log.close()


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` to a running process; kill it if it has not exited after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_chunked(wfile: Any, body: bytes, chunk_size: int = 65536) -> None:
    """``body`` as an HTTP/1.1 chunked transfer (no Content-Length: a streaming proxy's
    reply); the headers, ``transfer-encoding: chunked`` among them, are sent already."""
    for start in range(0, len(body), chunk_size):
        chunk = body[start : start + chunk_size]
        wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    wfile.write(b"0\r\n\r\n")
