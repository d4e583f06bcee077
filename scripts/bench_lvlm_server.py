"""Load check of the local LVLM server: N requests at concurrency C, loopback only.

Starts `spotvlm-lvlm-server --backend detector` (no injected latency or faults) on a free
loopback port, sends real BDD100K frames through the project's client, and reports errors,
p50/p95/max round-trip latency and throughput. Bounded in count and time.

    source env.sh && python scripts/bench_lvlm_server.py [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotvlm_ros.cloud.client import LvlmClient, LvlmClientConfig, OutcomeKind  # noqa: E402
from spotvlm_ros.tools.benchdoc import percentile, update_section  # noqa: E402
from test.helpers.servers import lvlm_server  # noqa: E402

SHARED = ROOT.parent / "shared"


async def load(url: str, frames: list[np.ndarray], n: int, concurrency: int) -> tuple[list, float]:
    client = LvlmClient(
        LvlmClientConfig(base_url=url, model="detector", max_in_flight=concurrency, timeout=60.0)
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int):  # type: ignore[no-untyped-def]
        async with sem:
            return await client.ask(frames[i % len(frames)], "Which objects are in the image?")

    start = time.perf_counter()
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 600)
    finally:
        await client.close()
    return outcomes, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    files = sorted(glob.glob(str(SHARED / "data/bdd100k_mot/images/**/*.jpg"), recursive=True))
    frames = [np.array(Image.open(f).convert("RGB")) for f in files]
    detector = SHARED / "models" / "centernet_mobilenetv3_coco.onnx"
    with lvlm_server(
        "--detector-model", str(detector), "--max-concurrency", str(args.concurrency)
    ) as url:
        outcomes, elapsed = asyncio.run(load(url, frames, args.requests, args.concurrency))
    ok = [o.latency for o in outcomes if o.kind is OutcomeKind.OK]
    errors = len(outcomes) - len(ok)
    p50, p95 = statistics.median(ok), percentile(ok, 0.95)
    text = (
        "## Local LVLM server under load (detector backend)\n\n"
        f"Command: `source env.sh && python scripts/bench_lvlm_server.py --requests "
        f"{args.requests} --concurrency {args.concurrency}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU threads; server and client on "
        "loopback on the same machine; 1280x720 BDD100K frames, resized by the client to "
        "1288x728 JPEG; no injected latency or faults.\n\n"
        "| requests | concurrency | errors | p50 (ms) | p95 (ms) | max (ms) "
        "| throughput (req/s) |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {len(outcomes)} | {args.concurrency} | {errors} | {p50 * 1000:.0f} | {p95 * 1000:.0f} "
        f"| {max(ok) * 1000:.0f} | {len(outcomes) / elapsed:.1f} |\n\n"
        "The detector runs one inference at a time (one ONNX session), so latency under "
        "concurrency is mostly queueing inside the server; the 2 cores are shared by client, "
        "server and detector."
    )
    print(text)
    if not args.no_write:
        update_section(ROOT / "docs" / "benchmarks.md", "lvlm-server", text)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
