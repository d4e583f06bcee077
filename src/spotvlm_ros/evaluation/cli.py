"""`spotvlm-eval`: edge-only, cloud-only, SpotVLM and its ablations over a labelled sequence,
against cloud latency, in deterministic virtual time.

    spotvlm-eval bdd100k ../shared/data/bdd100k_mot --svlm-model build/test-models/tiny \
        --latencies 1,2,3,4,5,6,7,8,9 --out out/eval/bdd100k

Writes results.md (table), results.json and score_vs_latency.png to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spotvlm_ros.core.engine import SvlmInputs
from spotvlm_ros.core.policy import UploadMode, UploadPolicyConfig
from spotvlm_ros.core.task import TASKS, AnswerForm, task
from spotvlm_ros.core.types import NS_PER_S, Stamp
from spotvlm_ros.core.vocab import Vocabulary
from spotvlm_ros.data.frames import DatasetError
from spotvlm_ros.data.readers import READERS, TASK_OF, VOCABULARY_OF
from spotvlm_ros.evaluation.replay import (
    METHODS,
    Frame,
    LvlmAnswer,
    Method,
    ReplayConfig,
    SvlmAnswer,
    replay,
)
from spotvlm_ros.parameters import DEADLINE_S, LVLM_MODEL, MAX_NEW_TOKENS
from spotvlm_ros.svlm.source import model_source_problem

START = 100 * NS_PER_S  # virtual time of the first frame


class JsonCache:
    """A dictionary persisted as JSON (backend outputs that do not change within a sweep)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path is not None and path.is_file():
            self.data = json.loads(path.read_text())
        self.hits = 0

    def get(self, key: str) -> Any:
        value = self.data.get(key)
        self.hits += value is not None
        return value

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))


def key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


class QwenReplaySvlm:
    """The Qwen2.5-VL backend with a cache of its answers (runs with GTVR on are never
    cached: they depend on the features of earlier frames held by the model)."""

    def __init__(self, model: str, cache: JsonCache, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        from spotvlm_ros.svlm.qwen import QwenSvlm, QwenSvlmConfig

        self.svlm = QwenSvlm.load(QwenSvlmConfig(model=model, max_new_tokens=max_new_tokens))
        self.cache = cache
        self.model = model
        self.max_new_tokens = max_new_tokens

    def reset(self) -> None:
        self.svlm.forget_features()

    def answer(
        self, name: str, image: np.ndarray, stamp: Stamp, question: str, inputs: SvlmInputs
    ) -> SvlmAnswer:

        k = key(
            "svlm-2",  # with the answer's confidence
            self.model,
            self.max_new_tokens,
            name,
            question,
            inputs.context_text,
            inputs.chat,
            [repr(r) for r in inputs.rois],
            inputs.ggvr,
        )
        # with GTVR on, every frame runs: the model keeps each frame's features for the ROI
        # frames that come later (a cached answer would leave them out)
        if not inputs.tracking and (hit := self.cache.get(k)) is not None:
            return SvlmAnswer(**hit)
        out = self.svlm.infer_frame(image, question, stamp, inputs)
        result = SvlmAnswer(
            out.answer,
            out.latency,
            out.visual_tokens_used,
            out.visual_tokens_full,
            out.confidence,
        )
        if not inputs.tracking:
            self.cache.put(k, result.__dict__)
        return result


class ClientReplayLvlm:
    """Any OpenAI-compatible LVLM (vLLM, SGLang, a gateway, the package's server), asked
    through cloud_bridge's own client (prompt, task header, reply parsing, bounds); its
    answers are cached per server, model, frame and question."""

    def __init__(self, config: Any, vocab: Vocabulary, cache: JsonCache) -> None:
        import asyncio

        from spotvlm_ros.cloud.client import LvlmClient

        self.config = config
        self.vocab = vocab
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self.client = LvlmClient(config)
        self.failures = 0
        self.name = f"{config.model} at {config.base_url}"

    def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
        from spotvlm_ros.cloud.client import OutcomeKind, request_end
        from spotvlm_ros.core.types import Box, Roi

        k = key("lvlm-api", self.config.base_url, self.config.model, self.config.task,
                self.vocab.name, name, question)  # fmt: skip
        hit = self.cache.get(k)
        if hit is None:
            out = self.loop.run_until_complete(self.client.ask(image, question))
            if out.kind is not OutcomeKind.OK:
                self.failures += 1
                if self.failures <= 3:
                    print(
                        f"spotvlm-eval: LVLM request for {name} failed ({out.kind.value}): "
                        f"{out.error}",
                        file=sys.stderr,
                    )
                return LvlmAnswer(
                    "", frozenset(), (), error=out.error or out.kind.value, end=request_end(out)
                )
            hit = {
                "answer": out.answer,
                "labels": sorted(out.labels),
                "rois": [
                    [r.label, r.box.x1, r.box.y1, r.box.x2, r.box.y2, r.score] for r in out.rois
                ],
            }
            self.cache.put(k, hit)
        rois = tuple(
            Roi(label, Box.from_corners(x1, y1, x2, y2), score)
            for label, x1, y1, x2, y2, score in hit["rois"]
        )
        return LvlmAnswer(hit["answer"], frozenset(hit["labels"]), rois)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


class DetectorReplayLvlm:
    """The ONNX detector as the cloud model, through the same reply parsing as the client."""

    def __init__(self, model_path: Path, vocab: Vocabulary, cache: JsonCache) -> None:
        from spotvlm_ros.cloud.backends import DetectorBackend

        self.backend = DetectorBackend(model_path, task_vocabulary=vocab.name)
        self.vocab = vocab
        self.cache = cache

    def answer(self, name: str, image: np.ndarray, question: str) -> LvlmAnswer:
        from spotvlm_ros.cloud.client import interpret_reply

        k = key("lvlm", self.backend.name, name, question)
        hit = self.cache.get(k)
        if hit is None:
            hit = {"reply": self.backend.answer(image, question)}
            self.cache.put(k, hit)
        size = (image.shape[1], image.shape[0])
        answer, labels, rois, _ = interpret_reply(
            hit["reply"], self.vocab, frame_size=size, model_size=size
        )
        return LvlmAnswer(answer, labels, rois)


def load_frames(
    kind: str, source: Path, vocab: Vocabulary, limit: int, task_name: str = "objects"
) -> list[Frame]:
    """The labelled frames of a dataset folder or a bag (named by their source, so that a
    cache shared by two datasets never mixes up their frames)."""
    if kind == "bag":
        from spotvlm_ros.data.bag import bag_frames, bag_task

        made_for = bag_task(source)
        if made_for and made_for != task_name:
            raise DatasetError(
                f"{source}: its ground truth is for the {made_for} task, not {task_name} "
                f"(--task {made_for}, or leave --task out)"
            )
        frames = bag_frames(source, vocab)
    else:
        frames = list(READERS[kind](source, vocab))
    frames = [f for f in frames if f.labels is not None][: limit or None]
    if not frames:
        raise DatasetError(f"{source}: no labelled frames")
    cache: dict[str, np.ndarray] = {}

    def loader(f: Any) -> Any:
        def load() -> np.ndarray:
            if f.name not in cache:
                cache[f.name] = f.load()
            return cache[f.name]

        return load

    where = source.resolve()
    return [
        Frame(f"{where}:{f.name}", START + f.stamp, loader(f), f.labels or frozenset())
        for f in frames
    ]


def plot(rows: list[dict[str, Any]], path: Path, note: str, score: str = "micro_f1") -> None:
    """``score`` (``micro_f1`` for objects, ``accuracy`` for gesture and caption, or
    ``mean_visual_tokens``) against cloud latency, a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method and r[score] is not None]
        if mine:
            x, y = [r["latency"] for r in mine], [r[score] for r in mine]
            ax.plot(x, y, marker="o", label=method)
    ax.set_xlabel("cloud latency (s)")
    if score == "mean_visual_tokens":
        ax.set_ylabel("visual tokens per frame (mean)")
        ax.set_ylim(bottom=0)
    else:
        label = "Micro-F1" if score == "micro_f1" else "accuracy"
        ax.set_ylabel(f"{label} of the real-time answer")
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    else:  # e.g. visual tokens of cloud-only runs: there are none
        ax.text(0.5, 0.5, f"no {score} in these runs", ha="center", transform=ax.transAxes)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(note, 90)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def upload_of(method: Method, config: ReplayConfig) -> str:
    """What a method uploaded, for its results row."""
    if not method.lvlm:
        return "none"
    if method.baseline == "distributed":
        return "features of every frame its edge encoder takes"
    if method.baseline == "adas":
        return "adas proxy: while the cloud is predicted in time, probes"
    if method.baseline == "laecips":
        return f"frames the SVLM is unsure of (confidence < {config.laecips_threshold:g})"
    if not method.svlm:
        return "every_frame"  # cloud-only: the cloud answers every frame
    if config.upload.mode is UploadMode.EVERY_FRAME:
        return "every_frame"
    return f"{config.upload.mode.value} (max {config.upload.max_in_flight} in flight)"


def _fixed(seconds: float) -> Callable[[int], float]:
    """The latency model of a fixed cloud latency: every frame's is ``seconds``."""
    return lambda i: seconds


def _cycling(trace: tuple[float, ...]) -> Callable[[int], float]:
    """The latency model of a trace: frame i gets the trace's i-th value, cyclically."""
    return lambda i: trace[i % len(trace)]


UPLOADS = ("adaptive", "every-frame")
EVERY_FRAME = UploadPolicyConfig(mode=UploadMode.EVERY_FRAME, max_in_flight=1024)
"""The ablation's upload: every frame, whatever is in flight (the paper's setting)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (its defaults are the live graph's: spotvlm_ros.parameters)."""
    p = argparse.ArgumentParser(prog="spotvlm-eval", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=sorted([*READERS, "bag"]))
    p.add_argument("source", type=Path)
    p.add_argument("--svlm-model", default="", help="Qwen2.5-VL folder (the tiny test model works)")
    p.add_argument(
        "--pairs",
        default="",
        help="the model-swap study: SVLM=LVLM,... (SVLM: a Qwen2.5-VL folder; LVLM: a model "
        "served at --lvlm-url, or 'detector'), each swept and tabulated by name",
    )
    p.add_argument(
        "--task",
        choices=tuple(TASKS),
        default=None,
        help="objects, gesture or caption (default: the reader's: gesture for hagrid and ipn, "
        "caption for ace, else objects)",
    )
    p.add_argument("--vocabulary", default="", help="the task's vocabulary ('' = its default)")
    p.add_argument(
        "--detector-model",
        type=Path,
        default=None,
        help="the LVLM stand-in without --lvlm-url (ONNX COCO detector: objects only)",
    )
    p.add_argument(
        "--lvlm-url",
        default="",
        help="an OpenAI-compatible LVLM server (API root, e.g. http://gpu:8000/v1), asked "
        "through cloud_bridge's client; answers cached in OUT/cache.json",
    )
    p.add_argument("--lvlm-model", default=LVLM_MODEL, help="its served model name")
    p.add_argument(
        "--api-key-env", default="", help="NAME of the environment variable holding its key"
    )
    p.add_argument(
        "--lvlm-timeout", type=float, default=60.0, help="per-request timeout [s] (offline)"
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated presets: "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values()),
    )
    p.add_argument("--latencies", default="1,2,3,4,5,6,7,8,9", help="fixed cloud latencies (s)")
    p.add_argument("--latency-model", choices=("fixed", "random", "trace"), default="fixed")
    p.add_argument("--latency-range", default="1,9", help="random: uniform in MIN,MAX (s)")
    p.add_argument("--latency-trace", type=Path, help="trace: one latency (s) per line")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--svlm-seconds", default="0.3", help="SVLM compute time per frame (s) or 'measured'"
    )
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="[s]")
    p.add_argument(
        "--upload",
        choices=UPLOADS,
        default="adaptive",
        help="what the SVLM+LVLM methods upload: adaptive (the live graph's latency-adaptive "
        "policy, cloud_bridge's defaults) or every-frame (the paper's ablation: every frame, "
        "no in-flight bound, to isolate CRM, GGVR and GTVR); cloud_only always uploads "
        "every frame",
    )
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/eval"))
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=MAX_NEW_TOKENS,
        help="SVLM answer limit (svlm_node's default)",
    )
    return p.parse_args(argv)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def latency_sweeps(args: argparse.Namespace) -> list[tuple[float, Callable[[int], float]]]:
    """The cloud latencies to sweep: (the row's latency, frame index -> latency [s])."""
    from spotvlm_ros.cloud.faults import read_trace

    if args.latency_model == "fixed":
        values = [_number(x) for x in args.latencies.split(",")]
        if not values or min(values) < 0:
            raise ValueError(f"--latencies {args.latencies!r}: seconds >= 0, comma-separated")
        return [(x, _fixed(x)) for x in values]
    if args.latency_model == "random":
        bounds = [_number(x) for x in args.latency_range.split(",")]
        if len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]:
            raise ValueError(
                f"--latency-range {args.latency_range!r}: MIN,MAX with 0 <= MIN <= MAX"
            )
        rng = random.Random(args.seed)
        draws = [rng.uniform(bounds[0], bounds[1]) for _ in range(1 << 16)]
        return [((bounds[0] + bounds[1]) / 2, _cycling(tuple(draws)))]
    if args.latency_trace is None:
        raise ValueError("--latency-model trace needs --latency-trace FILE")
    trace = read_trace(args.latency_trace)
    return [(sum(trace) / len(trace), _cycling(trace))]


def pairs_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (SVLM folder, LVLM) pairs to sweep: ``--pairs SVLM=LVLM,...`` (LVLM: a model
    served at --lvlm-url, or ``detector``), else the one of --svlm-model and --lvlm-model."""
    default_lvlm = args.lvlm_model if args.lvlm_url else "detector"
    if not args.pairs:
        if not args.svlm_model:
            raise ValueError("give --svlm-model (or --pairs SVLM=LVLM,...)")
        return [(args.svlm_model, default_lvlm)]
    pairs = []
    for item in args.pairs.split(","):
        svlm, sep, lvlm = item.partition("=")
        if not sep or not svlm.strip() or not lvlm.strip():
            raise ValueError(f"--pairs: {item!r} is not SVLM=LVLM")
        if lvlm.strip() != "detector" and not args.lvlm_url:
            raise ValueError(f"--pairs: the LVLM {lvlm!r} needs --lvlm-url (or 'detector')")
        pairs.append((svlm.strip(), lvlm.strip()))
    return pairs


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    args = parse_args(argv)
    from spotvlm_ros.cloud.backends import DEFAULT_DETECTOR
    from spotvlm_ros.cloud.client import LvlmClientConfig

    command = f"spotvlm-eval {' '.join(sys.argv[1:] if argv is None else argv)}"
    try:
        default_task = TASK_OF.get(args.kind, "objects")
        if args.kind == "bag" and not args.task:
            from spotvlm_ros.data.bag import bag_task

            default_task = bag_task(args.source) or default_task
        chosen = task(args.task or default_task)
        vocab = chosen.vocabulary(args.vocabulary or VOCABULARY_OF.get(args.kind, ""))
        pairs = pairs_of(args)
        for svlm_path, _ in pairs:
            problem = model_source_problem(svlm_path, "--svlm-model")
            if problem is not None:
                raise ValueError(problem)
        unknown = [m for m in args.methods.split(",") if m not in METHODS]
        if unknown:
            raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
        if not 0.01 <= args.deadline <= 60.0:
            raise ValueError(f"--deadline {args.deadline:g} s is outside [0.01, 60]")
        if args.svlm_seconds != "measured" and not 0.0 < _number(args.svlm_seconds) < 60.0:
            raise ValueError(f"--svlm-seconds {args.svlm_seconds}: (0, 60) s or 'measured'")
        sweeps = latency_sweeps(args)
        if chosen.name != "objects" and any(lvlm == "detector" for _, lvlm in pairs):
            raise ValueError(
                f"the {chosen.name} task needs an LVLM that answers it: give --lvlm-url (a VLM "
                "server, e.g. spotvlm-lvlm-server --backend qwen); the detector stand-in "
                "answers only the objects task"
            )
        frames = load_frames(args.kind, args.source, vocab, args.limit, chosen.name)
        methods = [METHODS[m] for m in args.methods.split(",")]
        if args.lvlm_url:  # checked before any work (a bad URL, an unknown task)
            LvlmClientConfig(base_url=args.lvlm_url, task=chosen.name, task_vocabulary=vocab.name)
    except (DatasetError, ValueError, KeyError, OSError) as exc:
        print(f"spotvlm-eval: error: {exc}", file=sys.stderr)
        return 2
    cache = JsonCache(args.out / "cache.json")
    rows: list[dict[str, Any]] = []
    lvlm_own: dict[str, Any] = {}  # per pair: the LVLM's own score on every frame
    names: list[str] = []
    started = time.monotonic()
    from spotvlm_ros.svlm.qwen import SvlmError

    for svlm_path, lvlm_name in pairs:
        try:
            svlm = QwenReplaySvlm(svlm_path, cache, args.max_new_tokens)
        except SvlmError as exc:
            print(f"spotvlm-eval: error: {exc}", file=sys.stderr)
            return 2
        lvlm: ClientReplayLvlm | DetectorReplayLvlm = (
            DetectorReplayLvlm(args.detector_model or DEFAULT_DETECTOR, vocab, cache)
            if lvlm_name == "detector"
            else ClientReplayLvlm(
                LvlmClientConfig(
                    base_url=args.lvlm_url,
                    model=lvlm_name,
                    api_key_env=args.api_key_env,
                    timeout=args.lvlm_timeout,
                    task=chosen.name,
                    task_vocabulary=vocab.name,
                ),
                vocab,
                cache,
            )
        )
        pair = {
            "svlm": Path(svlm_path).name
            + (" (random test model)" if svlm.svlm.is_test_model else ""),
            "lvlm": lvlm.backend.name if isinstance(lvlm, DetectorReplayLvlm) else lvlm_name,
        }
        names.append(f"{pair['svlm']} + {pair['lvlm']}")
        config = ReplayConfig(
            task=chosen.name,
            deadline=args.deadline,
            svlm_seconds=None if args.svlm_seconds == "measured" else float(args.svlm_seconds),
            count_tokens=svlm.svlm.count_tokens,  # the history budget in the SVLM's tokens
            upload=EVERY_FRAME if args.upload == "every-frame" else UploadPolicyConfig(),
        )
        own, pair_rows = sweep(frames, methods, sweeps, svlm, lvlm, vocab, config)
        rows += [{**pair, **r} for r in pair_rows]
        if own is not None:
            lvlm_own[names[-1]] = own
        cache.save()
        if isinstance(lvlm, ClientReplayLvlm):
            lvlm.close()
    note = (
        f"{len(frames)} frames of {args.kind} {args.source.name}, task {chosen.name} "
        f"({chosen.description}, vocabulary {vocab.name}, metric: {chosen.metric}); "
        f"SVLM + LVLM: {'; '.join(names)}"
    )
    score = "micro_f1" if chosen.form is AnswerForm.LABELS else "accuracy"
    text = write_results(args.out, rows, lvlm_own, note, command, score, chosen.name, vocab.name)
    print(text)
    print(
        f"\nwritten to {args.out} in {time.monotonic() - started:.0f} s "
        f"({cache.hits} cached backend outputs reused)"
    )
    return 0


def sweep(
    frames: list[Frame],
    methods: list[Method],
    sweeps: list[tuple[float, Callable[[int], float]]],
    svlm: QwenReplaySvlm,
    lvlm: Any,
    vocab: Vocabulary,
    config: ReplayConfig,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Every method at every cloud latency (a method without the LVLM once, for all):
    the LVLM's own score and a row per (method, latency)."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    own: dict[str, Any] | None = None
    for method in methods:
        latencies = sweeps if method.lvlm else sweeps[:1]
        for latency, model in tqdm(latencies, desc=method.name, unit="latency"):
            log, _ = replay(frames, method, model, svlm, lvlm, vocab, config)
            report = log.report()
            if method.name == "cloud_only" or (method.lvlm and own is None):
                own = report["scores"]["lvlm"]
            for lat in [latency] if method.lvlm else [s for s, _ in sweeps]:
                rows.append(
                    {
                        "method": method.name,
                        "upload": upload_of(method, config),
                        "latency": lat,
                        **report["scores"]["final"],
                        "deadline_misses": report["deadline_misses"],
                        "mean_visual_tokens": report["mean_visual_tokens"],
                        "context_replacements": report["context_replacements"],
                    }
                )
    return own, rows


ABLATION = ("edge_only", "crm", "crm_ggvr", "spotvlm")


def write_results(
    out: Path,
    rows: list[dict[str, Any]],
    lvlm_own: dict[str, Any],
    note: str,
    command: str,
    score: str,
    task_name: str,
    vocabulary_name: str,
) -> str:
    """results.md (every row; the score by method and latency for each model pair; the
    ablation table; visual tokens), results.json, the figures and command.txt in ``out``;
    returns results.md's text."""
    out.mkdir(parents=True, exist_ok=True)
    title = "Micro-F1" if score == "micro_f1" else "accuracy"
    pairs = list(dict.fromkeys((r["svlm"], r["lvlm"]) for r in rows))
    latencies = sorted({r["latency"] for r in rows})
    lines = [f"# spotvlm-eval: {note}", "", f"Command: `{command}`", ""]
    lines += [
        "| SVLM | LVLM | method | upload | cloud latency (s) | Micro-F1 | Macro-F1 | exact match "
        "| accuracy | deadline misses | mean visual tokens | context replacements |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tokens = "" if r["mean_visual_tokens"] is None else f"{r['mean_visual_tokens']:.0f}"
        lines.append(
            f"| {r['svlm']} | {r['lvlm']} | {r['method']} | {r['upload']} | {r['latency']:g} "
            f"| {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['exact_match']:.3f} "
            f"| {r['accuracy']:.3f} | {r['deadline_misses']} | {tokens} "
            f"| {r['context_replacements']} |"
        )
    for svlm, lvlm in pairs:
        mine = [r for r in rows if (r["svlm"], r["lvlm"]) == (svlm, lvlm)]
        by = {(r["method"], r["latency"]): r for r in mine}
        methods = list(dict.fromkeys(r["method"] for r in mine))
        header = " | ".join(f"{lat:g} s" for lat in latencies)
        lines += [
            "",
            f"## {title} of the real-time answer by cloud latency: {svlm} + {lvlm}",
            "",
            f"| method | {header} |",
            "|---|" + "---|" * len(latencies),
        ]
        for m in methods:
            cells = [f"{by[m, lat][score]:.3f}" if (m, lat) in by else "" for lat in latencies]
            lines.append(f"| {m} | {' | '.join(cells)} |")
        ablation = [m for m in ABLATION if m in methods]
        if len(ablation) > 1:
            flags = {m: METHODS[m] for m in ablation}
            lines += [
                "",
                f"### Ablation ({svlm} + {lvlm}; upload: "
                f"{by[ablation[-1], latencies[0]]['upload']})",
                "",
                f"| method | CRM | GGVR | GTVR | {header} |",
                "|---|---|---|---|" + "---|" * len(latencies),
            ]
            for m in ablation:
                f = flags[m]
                marks = " | ".join("yes" if on else "-" for on in (f.crm, f.ggvr, f.gtvr))
                cells = [f"{by[m, lat][score]:.3f}" for lat in latencies if (m, lat) in by]
                lines.append(f"| {m} | {marks} | {' | '.join(cells)} |")
    if len(pairs) > 1:
        lines += [
            "",
            f"## Model pairs: mean {title} over the cloud latencies",
            "",
            "| SVLM | LVLM | " + " | ".join(dict.fromkeys(r["method"] for r in rows)) + " |",
            "|---|---|" + "---|" * len(dict.fromkeys(r["method"] for r in rows)),
        ]
        for svlm, lvlm in pairs:
            cells = []
            for m in dict.fromkeys(r["method"] for r in rows):
                values = [
                    r[score] for r in rows if (r["svlm"], r["lvlm"], r["method"]) == (svlm, lvlm, m)
                ]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "")
            lines.append(f"| {svlm} | {lvlm} | {' | '.join(cells)} |")
    for name, own in lvlm_own.items():
        lines += [
            "",
            f"The LVLM's own answers ({name}), every frame, whatever the deadline: accuracy "
            f"{own['accuracy']:.3f}, Micro-F1 {own['micro_f1']:.3f} over "
            f"{own['frames_scored']} frames.",
        ]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "command.txt").write_text(command + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "note": note,
                "command": command,
                "task": task_name,
                "vocabulary": vocabulary_name,
                "rows": rows,
                # the LVLM's own score (one pair: its report; several: by pair)
                "lvlm": next(iter(lvlm_own.values())) if len(lvlm_own) == 1 else lvlm_own,
            },
            indent=2,
        )
    )
    for n, (svlm, lvlm) in enumerate(pairs):
        mine = [r for r in rows if (r["svlm"], r["lvlm"]) == (svlm, lvlm)]
        suffix = "" if len(pairs) == 1 else f"-{n + 1}"
        caption = f"{note} ({svlm} + {lvlm}); {command}"
        plot(mine, out / f"score_vs_latency{suffix}.png", caption, score)
        plot(mine, out / f"tokens_vs_latency{suffix}.png", caption, "mean_visual_tokens")
    return text


if __name__ == "__main__":
    sys.exit(main())
