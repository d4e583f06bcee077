"""Benchmark of visual focus inside the SVLM: encoder, prefill, generation and peak memory.

Side by side in one run, on the same real frames: the full image against GGVR with ROIs
covering ~5 %, ~15 % and ~40 % of the frame, with the focus acting on the LM's input
only (LM-side: the encoder sees the whole frame) and inside the encoder (encoder-side:
only the windows the ROIs touch are encoded), optionally with GTVR, for the tiny test
model and for a "3B-shaped" random model (Qwen2.5-VL-3B's vision tower and language width,
with few language layers so that it runs in minutes on a CPU). Also the cosine similarity
of the kept tokens' features, encoder-side against LM-side. Random weights: the answers
are meaningless, the costs are real.

    source env.sh && python scripts/bench_svlm.py [--repeats 3] [--lm-layers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import glob
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spotvlm_ros.core.focus import focus_token_indices
from spotvlm_ros.core.types import Box, Roi
from spotvlm_ros.svlm.encoder_focus import FocusedFeatures, encode_focused, grow_tokens
from spotvlm_ros.svlm.qwen import ATTENTION, Focus, QwenSvlm, QwenSvlmConfig, SvlmError
from spotvlm_ros.svlm.qwen import _resolve_device as resolve_device
from spotvlm_ros.svlm.qwen import _resolve_dtype as resolve_dtype
from spotvlm_ros.svlm.tiny import qwen_tokenizer_folder, tiny_config_dict
from spotvlm_ros.tools.benchdoc import update_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bdd100k_mot" / "images"
QUESTION = "Which objects are in the image? Answer with a list of object categories."
COVERAGES = (None, 0.05, 0.15, 0.40)

# Qwen2.5-VL-3B-Instruct's published config: vision tower as is, LM width as is.
VISION_3B = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}  # fmt: skip
TEXT_3B = {
    "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
    "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
}  # fmt: skip


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS, so that RSS shows what is live (glibc only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRss:
    """Peak resident memory of this process above the level at start (sampled every 2 ms)."""

    def __enter__(self) -> PeakRss:
        _release_freed_memory()
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


class PeakCuda:
    """Peak CUDA memory allocated during the block, above the level at its start."""

    def __enter__(self) -> PeakCuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a wall-clock reading includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Row:
    model: str
    coverage: float | None
    stage: str  # "full", "lm", "encoder" or "encoder_tokens" (encoder_scope tokens)
    gtvr: bool
    visual_tokens: int
    visual_full: int
    seq_len: int
    seq_full: int
    patches: int
    patches_full: int
    vision_s: float
    prefill_s: float
    generate_s: float
    total_s: float
    peak_mib: float


@dataclass
class Similarity:
    model: str
    coverage: float
    tokens: int
    patches: int
    patches_full: int
    mean: float
    min: float
    tokens_patches: int  # encoder_scope tokens
    tokens_mean: float
    tokens_min: float


def centred_roi(width: int, height: int, share: float) -> Roi:
    """A box with the frame's aspect ratio covering ``share`` of its area, in the centre."""
    scale = share**0.5
    w, h = width * scale, height * scale
    x, y = (width - w) / 2, (height - h) / 2
    return Roi("car", Box(x, y, x + w, y + h))


def build_model(
    name: str,
    lm_layers: int,
    max_pixels: int,
    device: str = "cpu",
    dtype: str = "auto",
    margin: int = 1,
) -> QwenSvlm:
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(0)
    if name == "tiny":
        cfg = tiny_config_dict()
        cfg.pop("spotvlm_random_test_model")
        config = Qwen2_5_VLConfig(**cfg)
    else:
        config = Qwen2_5_VLConfig(
            vision_config=VISION_3B,
            text_config={**TEXT_3B, "num_hidden_layers": lm_layers},
            tie_word_embeddings=True,
        )
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    config._attn_implementation = ATTENTION  # as QwenSvlm.load asks for it
    with where:  # built on the device: a full-size 3B never passes through host memory
        model = Qwen2_5_VLForConditionalGeneration(config).to(precision).eval()
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_folder())
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels)
    svlm_config = QwenSvlmConfig(
        model=name,
        max_pixels=max_pixels,
        max_new_tokens=16,
        device=device,
        dtype=dtype,
        focus_margin_tokens=margin,
    )
    return QwenSvlm(model, tokenizer, processor, svlm_config, is_test_model=True)


@torch.inference_mode()
def similarity(svlm: QwenSvlm, name: str, frame: np.ndarray, margin: int) -> list[Similarity]:
    """The kept tokens' features, encoder-side against LM-side focus (the whole frame's
    encoding, gathered), per ROI coverage: cosine similarity, mean and min over the tokens
    the encoder-side focus gives the LM (the ROI tokens grown by ``margin``)."""
    height, width = frame.shape[:2]
    pixel_values, grid_thw, grid = svlm._pixels(frame)
    whole = svlm.visual_features(pixel_values, grid_thw).float()
    out = []
    for coverage in COVERAGES:
        if coverage is None:
            continue
        roi_tokens = focus_token_indices([centred_roi(width, height, coverage)], grid)
        kept = grow_tokens(roi_tokens, grid.rows, grid.cols, margin)
        visual = svlm.model.model.visual
        focused = encode_focused(visual, pixel_values, grid_thw, kept)
        scoped = encode_focused(visual, pixel_values, grid_thw, kept, whole_windows=False)
        index = torch.tensor(kept, device=focused.indices.device)

        def cosine(encoded: FocusedFeatures, index: torch.Tensor = index) -> torch.Tensor:
            rows = torch.searchsorted(encoded.indices, index)
            return torch.nn.functional.cosine_similarity(
                encoded.features[rows].float(), whole[index], dim=-1
            )

        cos, cos_tokens = cosine(focused), cosine(scoped)
        out.append(
            Similarity(
                name,
                coverage,
                len(kept),
                focused.patches,
                focused.patches_full,
                float(cos.mean()),
                float(cos.min()),
                scoped.patches,
                float(cos_tokens.mean()),
                float(cos_tokens.min()),
            )
        )
        print(
            f"  {name:9s} roi={coverage!s:5s} cosine windows mean {out[-1].mean:.4f} min "
            f"{out[-1].min:.4f}; tokens mean {out[-1].tokens_mean:.4f} min "
            f"{out[-1].tokens_min:.4f}",
            flush=True,
        )
    return out


def measure(
    svlm: QwenSvlm,
    name: str,
    frames: list[np.ndarray],
    repeats: int,
    gtvr_settings: tuple[bool, ...],
) -> list[Row]:
    rows = []
    base_config = svlm.config
    for coverage in COVERAGES:
        stages = ("full",) if coverage is None else ("lm", "encoder", "encoder_tokens")
        for stage in stages:
            svlm.config = dataclasses.replace(
                base_config,
                focus_stage="encoder" if stage.startswith("encoder") else "lm",
                encoder_scope="tokens" if stage == "encoder_tokens" else "windows",
            )
            for gtvr in gtvr_settings:
                rows.append(measure_one(svlm, name, frames, repeats, coverage, stage, gtvr))
                last = rows[-1]
                print(
                    f"  {name:9s} roi={coverage!s:5s} {stage:14s} gtvr={gtvr!s:5s} "
                    f"tokens={last.visual_tokens:5d} patches={last.patches:5d} "
                    f"encoder={last.vision_s * 1000:8.1f} ms prefill={last.prefill_s * 1000:8.1f} "
                    f"ms frame={last.total_s * 1000:8.1f} ms",
                    flush=True,
                )
    svlm.config = base_config
    return rows


def measure_one(
    svlm: QwenSvlm,
    name: str,
    frames: list[np.ndarray],
    repeats: int,
    coverage: float | None,
    stage: str,
    gtvr: bool,
) -> Row:
    height, width = frames[0].shape[:2]
    focus = None if coverage is None else Focus([centred_roi(width, height, coverage)], 0)
    vision, prefill, generate, totals, peaks = [], [], [], [], []
    prepared = None
    for r in range(repeats):
        for i, frame in enumerate(frames):
            stamp = 1 + r * len(frames) + i
            # GTVR's ROI frame: the previous frame's features are held
            f = Focus(focus.rois, stamp - 1) if focus and gtvr else focus
            with PeakCuda() if svlm.device.type == "cuda" else PeakRss() as mem:
                t0 = time.perf_counter()
                prepared = svlm.prepare(
                    frame, QUESTION, stamp=stamp, focus=f, ggvr=focus is not None, gtvr=gtvr
                )
                sync(svlm.device)
                t1 = time.perf_counter()
                tokens, lm_prefill, _ = svlm.generate(prepared, max_new_tokens=16)
                sync(svlm.device)
                t2 = time.perf_counter()
            vision.append(t1 - t0)
            prefill.append(lm_prefill)
            generate.append((t2 - t1 - lm_prefill) / max(1, len(tokens) - 1))
            totals.append(t2 - t0)
            peaks.append(mem.delta_mib)
    assert prepared is not None
    if stage.startswith("encoder") and prepared.focus_stage != "encoder":
        raise SystemExit(f"bench_svlm: encoder-side focus fell back: {prepared.notes}")
    return Row(
        model=name,
        coverage=coverage,
        stage=stage,
        gtvr=gtvr,
        visual_tokens=prepared.visual_tokens_used,
        visual_full=prepared.visual_tokens_full,
        seq_len=prepared.inputs_embeds.shape[1],
        seq_full=prepared.input_ids.shape[1],
        patches=prepared.encoder_patches,
        patches_full=prepared.encoder_patches_full,
        vision_s=statistics.median(vision),
        prefill_s=statistics.median(prefill),
        generate_s=statistics.median(generate),
        total_s=statistics.median(totals),
        peak_mib=max(peaks),
    )


STAGE_NAMES = {
    "full": "none",
    "lm": "LM-side",
    "encoder": "encoder-side (windows)",
    "encoder_tokens": "encoder-side (tokens)",
}


def table(rows: list[Row]) -> str:
    lines = [
        "| model | ROIs cover | focus | GTVR | visual tokens | token ratio | encoder patches "
        "| encoder + focus (ms) | LM prefill (ms) | per new token (ms) | whole frame (ms) "
        "| whole-frame ratio | ratio / token ratio | LM sequence | peak mem (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r.model, r.gtvr): r for r in rows if r.coverage is None}
    for r in rows:
        ref = base[(r.model, r.gtvr)]
        cover = "full image" if r.coverage is None else f"{r.coverage:.0%}"
        token_ratio = r.visual_tokens / r.visual_full
        frame_ratio = r.total_s / ref.total_s
        lines.append(
            f"| {r.model} | {cover} | {STAGE_NAMES[r.stage]} | {'on' if r.gtvr else 'off'} "
            f"| {r.visual_tokens}/{r.visual_full} | {token_ratio:.2f} "
            f"| {r.patches}/{r.patches_full} | {r.vision_s * 1000:.0f} "
            f"| {r.prefill_s * 1000:.1f} | {r.generate_s * 1000:.1f} | {r.total_s * 1000:.0f} "
            f"| {frame_ratio:.2f} | {frame_ratio / token_ratio:.2f} | {r.seq_len} "
            f"| {r.peak_mib:.0f} |"
        )
    return "\n".join(lines)


def similarity_table(rows: list[Similarity]) -> str:
    lines = [
        "| model | ROIs cover | kept tokens | windows: encoder patches | cosine mean "
        "| cosine min | tokens: encoder patches | cosine mean | cosine min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.coverage:.0%} | {r.tokens} | {r.patches}/{r.patches_full} "
            f"| {r.mean:.4f} | {r.min:.4f} | {r.tokens_patches}/{r.patches_full} "
            f"| {r.tokens_mean:.4f} | {r.tokens_min:.4f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--lm-layers", type=int, default=4, help="LM layers of the 3B-shaped model")
    parser.add_argument("--max-pixels", type=int, default=28 * 28 * 640)
    parser.add_argument("--models", default="tiny,3b-shaped")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA), float32, ...")
    parser.add_argument(
        "--gtvr", choices=("off", "on", "both"), default="off", help="GTVR in the timed rows"
    )
    parser.add_argument(
        "--margin", type=int, default=1, help="encoder-side focus: focus_margin_tokens"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    files = sorted(glob.glob(str(DATA / "**" / "*.jpg"), recursive=True))[: args.frames]
    if not files:
        raise SystemExit(f"no frames under {DATA}")
    frames = [np.array(Image.open(f).convert("RGB")) for f in files]
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        device = resolve_device(args.device)
    except SvlmError as exc:
        raise SystemExit(f"bench_svlm: {exc}") from None
    on_gpu = device.type == "cuda"
    where = torch.cuda.get_device_name(device) if on_gpu else f"{os.cpu_count()} CPU threads"
    gtvr_settings = {"off": (False,), "on": (True,), "both": (False, True)}[args.gtvr]
    rows: list[Row] = []
    similarities: list[Similarity] = []
    for name in args.models.split(","):
        print(f"building {name} ...", flush=True)
        svlm = build_model(
            name, args.lm_layers, args.max_pixels, args.device, args.dtype, args.margin
        )
        similarities += similarity(svlm, name, frames[0], args.margin)  # the encoder's warm-up
        warm = dataclasses.replace(svlm.config, focus_stage="encoder")
        svlm.config, base = warm, svlm.config
        height, width = frames[0].shape[:2]
        focus = Focus([centred_roi(width, height, COVERAGES[1] or 0.05)], 0)
        svlm.generate(svlm.prepare(frames[0], QUESTION, focus=focus, ggvr=True), 2)  # the LM's
        svlm.config = base
        rows += measure(svlm, name, frames, args.repeats, gtvr_settings)
        del svlm
    text = table(rows) + "\n\n" + similarity_table(similarities)
    print(text)
    body = (
        "## SVLM visual focus (GGVR / GTVR)\n\n"
        f"Command: `source env.sh && python scripts/bench_svlm.py --repeats {args.repeats} "
        f"--frames {args.frames} --lm-layers {args.lm_layers} --max-pixels {args.max_pixels} "
        f"--device {args.device} --gtvr {args.gtvr} --margin {args.margin}`  \n"
        f"Machine: {platform.machine()}, {where}, torch {torch.__version__}, "
        f"{str(resolve_dtype(args.dtype, device)).removeprefix('torch.')}, attention "
        f"{ATTENTION}, {len(frames)} BDD100K frames (1280x720) x {args.repeats} repeats, "
        "medians.  \n"
        "Models: `tiny` (the random test model) and `3b-shaped` (Qwen2.5-VL-3B's vision tower, "
        f"LM width 2048 with {args.lm_layers} of its 36 layers), random weights.\n\n"
        "*focus*: none (the whole frame to the encoder and the LM), LM-side (GGVR: the "
        "encoder sees the whole frame, the LM only the ROI tokens) or encoder-side "
        "(`focus_stage: encoder`: the encoder encodes only the 112-px windows that the ROI "
        f"tokens grown by {args.margin} touch, the LM gets the grown ROI tokens; with "
        "`encoder_scope: tokens` only the grown ROI tokens' patches are encoded). "
        "*token ratio* = visual tokens given to the LM relative to the full image; "
        "*whole frame* = encoder + focus + LM prefill + 16 new tokens; *whole-frame ratio* = "
        "its time relative to the full image (same model, same GTVR setting); *ratio / token "
        "ratio* = how far the frame's cost falls short of the token saving (1 = in "
        "proportion). Peak memory is the resident-set increase during one frame.\n\n"
        "The cosine table compares, on the first frame, each kept token's features from the "
        "encoder-side focus with the whole frame's encoding (what LM-side focus gives the LM): "
        "with `encoder_scope: windows` they differ only through the vision tower's "
        "full-attention blocks (3B: blocks 7, 15, 23, 31 of 32; tiny: its last of 2), which "
        "attend over the encoded windows instead of the whole frame; with `tokens` the window "
        "blocks, too, see only the kept tokens of each window. With random weights this shows "
        "the size of the numerical change, "
        "not the accuracy it costs: that needs the real weights and a task metric.\n\n" + text
    )
    if not args.no_write:
        section = "svlm-cuda" if on_gpu else "svlm"
        update_section(
            ROOT / "docs" / "benchmarks.md",
            section,
            body.replace("## SVLM", "## SVLM on CUDA" if on_gpu else "## SVLM", 1),
        )
        print("written to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
