"""The main job (`scripts/dev demo`): replay real frames through the whole graph.

Builds a demo bag from ../shared/data (CamVid at 1 Hz, then the BDD100K clips), starts the
local LVLM server (detector backend, 2 s injected latency) and the whole graph through the
runner, and writes out/demo/: the evaluator's report, the overlay images and an MP4 of
them, and a summary. Set SPOTVLM_SVLM_MODEL to a Qwen2.5-VL folder for real SVLM answers;
without it the random test model is used and its answers are meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    p = argparse.ArgumentParser(prog="spotvlm-demo", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    p.add_argument("--camvid-frames", type=int, default=30)
    p.add_argument("--latency", type=float, default=2.0, help="injected cloud latency (s)")
    p.add_argument("--port", type=int, default=18000)
    args = p.parse_args(argv)
    started = time.monotonic()
    model = os.environ.get("SPOTVLM_SVLM_MODEL", "")
    test_model = not model
    if test_model:
        from spotvlm_ros.svlm.tiny import build_tiny_model

        model_dir = ROOT / "build" / "demo-model" / "tiny-qwen2.5-vl"
        if not (model_dir / "model.safetensors").is_file():
            print("building the random test SVLM (no real weights given) ...", flush=True)
            build_tiny_model(model_dir)
        model = str(model_dir)
    from spotvlm_ros.core.vocab import vocabulary
    from spotvlm_ros.data.bag import write_bag
    from spotvlm_ros.data.sequences import demo

    bag = ROOT / "rosbags" / "demo"
    print(f"writing the demo bag {bag} from {args.data} ...", flush=True)
    n = write_bag(
        demo(args.data, vocabulary("bdd100k"), camvid_frames=args.camvid_frames),
        bag,
        task="objects",
        overwrite=True,
    )
    out = args.out
    for old in (out / "overlays").glob("*.png") if (out / "overlays").is_dir() else []:
        old.unlink()
    env = {**os.environ, "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "42")}
    cmd = [
        sys.executable,
        "-m",
        "spotvlm_ros.runner",
        "--model-path",
        model,
        "--start-server",
        "--server-latency",
        str(args.latency),
        "--server-port",
        str(args.port),
        "--bag",
        str(bag),
        "--evaluate",
        "--report-dir",
        str(out),
        "--log-dir",
        str(out / "logs"),
        "--set",
        f"evaluator.overlay_dir={json.dumps(str(out / 'overlays'))}",
        "--set",
        f"evaluator.report_note={json.dumps(note(model, test_model, args.latency))}",
        "--set",
        "svlm_node.max_new_tokens=16",
    ]
    print(f"replaying {n} frames through the graph (logs in {out / 'logs'}) ...", flush=True)
    print(f"  (the same as: {launch_command(cmd[3:])})", flush=True)
    rc = subprocess.call(cmd, env=env)
    report_file = out / "report.json"
    if rc != 0 or not report_file.is_file():
        print(f"the graph failed (exit {rc}); see {out / 'logs'}", file=sys.stderr)
        return 1
    report = json.loads(report_file.read_text())
    if report["final_answers"] == 0:
        print(f"the graph answered no frame; see {out / 'logs'}", file=sys.stderr)
        return 1
    video = make_video(out / "overlays", out / "overlay.mp4")
    summary(report, n, out, video, test_model, model)
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


def launch_command(runner_args: list[str]) -> str:
    """The ``ros2 launch`` line that the runner's arguments amount to."""
    from spotvlm_ros.runner import launch_arguments, parse_args

    defaults = launch_arguments(parse_args([]), None)
    given = launch_arguments(parse_args(runner_args), None)
    changed = [
        f"{k}:={shlex.quote(v)}" for k, v in given.items() if v != defaults[k] and k != "output"
    ]
    overrides = " params_file:=<the --set overrides>" if "--set" in runner_args else ""
    return " ".join(["ros2 launch spotvlm_ros spotvlm.launch.py", *changed]) + overrides


def note(model: str, test_model: bool, latency: float) -> str:
    what = (
        (
            "SVLM: the RANDOM TEST MODEL; its answers are meaningless (set SPOTVLM_SVLM_MODEL "
            "to a Qwen2.5-VL folder for real ones)"
        )
        if test_model
        else f"SVLM: {model}"
    )
    return f"{what}. LVLM: the ONNX COCO detector behind the local server, {latency:g} s latency."


def make_video(folder: Path, path: Path) -> Path | None:
    """An MP4 of the overlay PNGs in time order (None if there are none)."""
    import cv2

    frames = sorted(folder.glob("*.png"), key=lambda f: int(f.stem))
    if not frames:
        return None
    height, width = 720, 1280
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 2.0, (width, height))
    for f in frames:
        image = cv2.imread(str(f))
        if image is not None:
            writer.write(cv2.resize(image, (width, height)))
    writer.release()
    return path


def summary(
    report: dict[str, Any], frames: int, out: Path, video: Path | None, test_model: bool, model: str
) -> None:
    s = report["scores"]
    lines = [
        "",
        "=== spotvlm demo ===",
        f"frames in the bag:        {frames}",
        f"final answers:            {report['final_answers']} " + str(report["answers_by_source"]),
        f"deadline misses:          {report['deadline_misses']}",
        f"context replacements:     {report['context_replacements']}",
        "mean visual tokens:       "
        + (
            f"{report['mean_visual_tokens']:.0f} of {report['mean_visual_tokens_full']:.0f}"
            if report["mean_visual_tokens"]
            else "n/a"
        ),
        *(
            # the random model's score would read as the system's: show only what is real
            [
                f"on time:                  {report['final_answers'] - report['deadline_misses']}"
                f" of {report['final_answers']}",
                f"LVLM Micro-F1 (its answers, on time or not): {s['lvlm']['micro_f1']:.3f}",
                "SVLM and final Micro-F1:  not shown: the SVLM is a RANDOM TEST MODEL",
            ]
            if test_model
            else [
                "Micro-F1 final / SVLM / LVLM: "
                + " / ".join(f"{s[k]['micro_f1']:.3f}" for k in ("final", "svlm", "lvlm"))
            ]
        ),
        f"report:                   {out / 'report.md'}",
        f"overlays:                 {out / 'overlays'}" + (f", video {video}" if video else ""),
    ]
    if test_model:
        lines += [
            "",
            "NOTE: the SVLM is a randomly initialised test model: its answers (and the SVLM "
            "F1) are meaningless.",
            "      For real answers: SPOTVLM_SVLM_MODEL=/path/to/Qwen2.5-VL-3B-Instruct "
            "scripts/dev demo",
        ]
    else:
        lines += [f"SVLM: {model}"]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
