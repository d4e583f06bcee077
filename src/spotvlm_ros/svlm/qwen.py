"""Qwen2.5-VL as the SVLM, with visual focus acting between the vision encoder and the LM.

One frame's inference:

1. the image processor resizes the frame (multiples of 28 px within [min, max] pixels)
   and cuts it into patches; the vision encoder turns them into N merged visual tokens
   ``v`` (N = grid_h * grid_w / 4), shape (N, D) with D the LM's width;
2. GTVR (optional) reweights ``v`` by its similarity to the features, cached from frame
   T-d, of the ROIs the cloud found in T-d;
3. the prompt's token embeddings get ``v`` at the ``<|image_pad|>`` positions and every
   position its 3D (M-RoPE) index from ``get_rope_index``;
4. GGVR (optional) drops the image positions outside the ROIs: the kept tokens keep their
   original 3D positions, so the LM still knows where each sits in the image;
5. a greedy decoder runs with the KV cache; each new token's position continues from the
   prompt's last position (the rope delta), whatever was pruned.

With ``focus_stage="encoder"`` GGVR acts earlier: step 1 encodes only the vision tower's
attention windows that the ROIs' tokens (grown by ``focus_margin_tokens``) touch
(:mod:`spotvlm_ros.svlm.encoder_focus`), GTVR reweights what the encoder produced, and
step 4 keeps the grown ROI tokens at their original 3D positions. The kept tokens'
features then differ from the whole frame's only through the encoder's full-attention
blocks, which attend over the encoded windows instead of the whole image.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from spotvlm_ros.core.engine import SvlmInputs
from spotvlm_ros.core.focus import TokenGrid, focus_token_indices, roi_token_groups
from spotvlm_ros.core.types import Roi, Stamp
from spotvlm_ros.svlm.encoder_focus import EncoderFocusError, encode_focused, grow_tokens
from spotvlm_ros.svlm.prompt import DEFAULT_SYSTEM, IMAGE_PAD, build_prompt, render_with_template
from spotvlm_ros.svlm.source import hub_offline, model_source_problem
from spotvlm_ros.svlm.tiny import TEST_MODEL_MARKER

LOG = logging.getLogger(__name__)

MODEL_PARAMETER = "model_path"
"""The svlm_node parameter that names the model folder or hub id (used in error messages)."""


class SvlmError(Exception):
    """The SVLM could not be loaded or could not process an input; the message says why."""


FOCUS_STAGES = ("lm", "encoder")
"""Where GGVR's focus can act: between the encoder and the LM, or inside the encoder."""

ENCODER_SCOPES = ("windows", "tokens")
"""What encoder-side focus encodes: the windows the ROIs touch, or the ROIs' tokens only."""


@dataclass(frozen=True)
class QwenSvlmConfig:
    """How the SVLM is loaded and run.

    Attributes:
        model: a local model folder, or a hub id (only works where the hub is reachable).
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16".
        min_pixels, max_pixels: the resized image's pixel range (snapped to 28x28 cells).
            The folder's ``preprocessor_config.json`` gives the model's own range;
            ``max_pixels`` caps it (the real-time budget: it never raises the folder's
            limit) and ``min_pixels`` raises its floor; 0 leaves the folder's value.
        max_new_tokens: the answer's length limit.
        system_prompt: the system turn.
        min_focus_tokens: GGVR falls back to the full image below this many kept tokens.
        gtvr_mu, gtvr_b: W_s = sigmoid(mu * s + b).
        gtvr_alpha: t' = alpha * (W_s * t) + (1 - alpha) * t; 0 leaves tokens unchanged.
        feature_cache_frames: how many past frames' visual features GTVR keeps.
        local_files_only: never contact the model hub (also when HF_HUB_OFFLINE=1).
        focus_stage: where GGVR's focus acts. "lm" (default): the vision encoder sees the
            whole frame and only the ROIs' tokens go on to the LM. "encoder": the vision
            encoder encodes only the windows (112 px for Qwen2.5-VL) that the ROIs' tokens,
            grown by ``focus_margin_tokens``, touch, and the LM gets the grown ROI tokens
            (see :mod:`spotvlm_ros.svlm.encoder_focus`); without usable ROIs, the whole
            frame, as with "lm".
        focus_margin_tokens: encoder stage only: the ROIs' tokens are grown by this many
            tokens (28 px of the resized image each) in every direction, for the motion
            between the ROIs' frame and this one; the grown tokens are what the LM gets.
        encoder_scope: encoder stage only: "windows" (default) encodes every patch of the
            windows the grown ROI tokens touch (only the full-attention blocks differ from
            the whole frame's encoding); "tokens" encodes only the grown ROI tokens'
            patches (cheaper; the window blocks then differ too at the ROIs' borders).
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    min_pixels: int = 0
    max_pixels: int = 448 * 448
    max_new_tokens: int = 32
    system_prompt: str = DEFAULT_SYSTEM
    min_focus_tokens: int = 4
    gtvr_mu: float = 10.0
    gtvr_b: float = -5.0
    gtvr_alpha: float = 0.5
    feature_cache_frames: int = 24
    local_files_only: bool = False
    focus_stage: str = "lm"
    focus_margin_tokens: int = 1
    encoder_scope: str = "windows"

    def __post_init__(self) -> None:
        cell = 28 * 28
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value != 0 and value < cell:
                raise SvlmError(f"{name} must be 0 (the model folder's) or >= {cell}, got {value}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise SvlmError(f"min_pixels {self.min_pixels} is above max_pixels {self.max_pixels}")
        if not 0.0 <= self.gtvr_alpha <= 1.0:
            raise SvlmError(f"gtvr_alpha must be in [0, 1], got {self.gtvr_alpha}")
        if self.max_new_tokens < 1 or self.min_focus_tokens < 1 or self.feature_cache_frames < 1:
            raise SvlmError("max_new_tokens, min_focus_tokens, feature_cache_frames must be >= 1")
        if self.focus_stage not in FOCUS_STAGES:
            raise SvlmError(
                f"focus_stage must be one of {', '.join(FOCUS_STAGES)}, got {self.focus_stage!r}"
            )
        if self.encoder_scope not in ENCODER_SCOPES:
            raise SvlmError(
                f"encoder_scope must be one of {', '.join(ENCODER_SCOPES)}, "
                f"got {self.encoder_scope!r}"
            )
        if self.focus_margin_tokens < 0:
            raise SvlmError(f"focus_margin_tokens must be >= 0, got {self.focus_margin_tokens}")


@dataclass(frozen=True)
class Focus:
    """ROIs for visual focus, from the frame at ``source_stamp`` (in that frame's pixels)."""

    rois: Sequence[Roi]
    source_stamp: Stamp


@dataclass(frozen=True)
class SvlmOutput:
    """One frame's answer and what it cost."""

    answer: str
    latency: float  # s, whole inference
    prefill_latency: float  # s, vision encoder + focus + LM prefill
    generate_latency: float  # s, decoding after the prefill
    generated_tokens: int
    visual_tokens_used: int
    visual_tokens_full: int
    ggvr_applied: bool
    gtvr_applied: bool
    focus_note: str  # why visual focus fell back, if it did
    stopped: bool = True  # False when max_new_tokens cut the answer before an end token
    confidence: float = 1.0  # the answer's probability per token (geometric mean), in (0, 1]
    focus_stage: str = "none"  # "encoder", "lm" (GGVR pruned the LM's input only) or "none"
    encoder_patches: int = 0  # patches the vision encoder encoded
    encoder_patches_full: int = 0  # patches of the whole frame


class HeldFeatures(NamedTuple):
    """A past frame's visual features, for GTVR."""

    features: torch.Tensor  # (N, D), zeros where not encoded
    grid: TokenGrid
    encoded: torch.Tensor | None  # (N,) bool: which tokens the encoder produced; None: all


class Generated(NamedTuple):
    """What greedy decoding produced."""

    tokens: list[int]
    prefill: float  # s
    confidence: float  # geometric mean of the chosen tokens' probabilities


@dataclass
class Prepared:
    """The LM's inputs for one frame, after visual focus (batch size 1)."""

    inputs_embeds: torch.Tensor  # (1, L_kept, D)
    position_ids: torch.Tensor  # (3, 1, L_kept), M-RoPE t/h/w indices of the kept positions
    kept: torch.Tensor  # (L_kept,) indices of the kept positions in the full prompt
    full_position_ids: torch.Tensor  # (3, 1, L) before pruning
    input_ids: torch.Tensor  # (1, L) the full prompt
    grid: TokenGrid
    visual_tokens_full: int
    visual_tokens_used: int
    ggvr_applied: bool
    gtvr_applied: bool
    notes: list[str] = field(default_factory=list)
    focus_stage: str = "none"  # "encoder", "lm" (GGVR pruned the LM's input only) or "none"
    encoder_patches: int = 0  # patches the vision encoder encoded
    encoder_patches_full: int = 0  # patches of the whole frame


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SvlmError(f"device {name!r} requested but CUDA is not available here")
    return device


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise SvlmError(f"dtype must be auto or one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


def gtvr_update(
    features: torch.Tensor, prototypes: torch.Tensor, mu: float, b: float, alpha: float
) -> torch.Tensor:
    """GTVR's gated update of the visual tokens ``features`` (N, D) by their similarity to
    the ROI prototypes f_c (C, D): s_j = max_c cos(f_c, v_j), W_s = sigmoid(mu * s + b),
    t' = alpha * (W_s * t) + (1 - alpha) * t."""
    sims = torch.nn.functional.cosine_similarity(
        features.float()[:, None, :], prototypes.float()[None, :, :], dim=-1
    )  # (N, C)
    weights = torch.sigmoid(mu * sims.max(dim=1).values + b)[:, None]  # (N, 1)
    updated = alpha * (weights * features.float()) + (1.0 - alpha) * features.float()
    return updated.to(features.dtype)


def as_rgb(image: Any) -> np.ndarray:
    """A validated (H, W, 3) uint8 RGB array from ``image`` (H x W x 3 RGB, or H x W gray)."""
    if not isinstance(image, np.ndarray):
        raise SvlmError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise SvlmError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise SvlmError(f"image must be HxWx3 (RGB) or HxW (gray), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise SvlmError(f"image is empty: shape {image.shape}")
    if max(image.shape[:2]) / min(image.shape[:2]) > 200:
        raise SvlmError(f"image aspect ratio is above 200: shape {image.shape}")
    return np.ascontiguousarray(image)


ATTENTION = "sdpa"
"""The attention kernel: PyTorch's scaled-dot-product attention (fused kernels on CUDA)."""

TRANSFORMERS_NEEDED = (5, 0)
"""The oldest transformers this code runs with (its Qwen2.5-VL module layout and calls)."""

SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")


def check_transformers(version: str | None = None) -> None:
    """Refuse a transformers older than :data:`TRANSFORMERS_NEEDED`, in one clear sentence."""
    import re

    if version is None:
        import transformers

        version = transformers.__version__
    match = re.match(r"(\d+)\.(\d+)", version)
    found = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if found < TRANSFORMERS_NEEDED:
        need = ".".join(map(str, TRANSFORMERS_NEEDED))
        raise SvlmError(
            f"transformers {version} is installed; spotvlm_ros needs transformers >= {need} "
            f"(pip install 'transformers>={need},<6')"
        )


def _check_weights(where: str, info: dict[str, Any], notes: list[str]) -> None:
    """A checkpoint that leaves weights uninitialised is refused: it would answer noise."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("lm_head."))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        shown = ", ".join(missing[:3] + [str(m) for m in mismatched[:3]])
        raise SvlmError(
            f"{where}: {len(missing)} weight(s) of Qwen2.5-VL missing and {len(mismatched)} of "
            f"the wrong shape in its checkpoint (e.g. {shown}): not a complete Qwen2.5-VL "
            "checkpoint, or one for another architecture"
        )
    unexpected = list(info.get("unexpected_keys", ()))
    if unexpected:
        notes.append(f"{len(unexpected)} checkpoint tensor(s) not used, e.g. {unexpected[:3]}")


def _image_settings(processor: Any, model_config: Any, config: QwenSvlmConfig) -> str:
    """Apply the pixel range (the folder's, capped by ``config``) and check that the
    processor's geometry is the vision encoder's; returns what was set, for the log."""
    vision = model_config.vision_config
    patch, merge = int(processor.patch_size), int(processor.merge_size)
    if (patch, merge) != (int(vision.patch_size), int(vision.spatial_merge_size)):
        raise SvlmError(
            f"preprocessor_config.json says patch {patch}, merge {merge}; config.json's vision "
            f"encoder has patch {vision.patch_size}, merge {vision.spatial_merge_size}: the "
            "folder mixes files of different models"
        )
    size = dict(getattr(processor, "size", None) or {})
    folder_min = int(size.get("shortest_edge") or 56 * 56)
    folder_max = int(size.get("longest_edge") or 28 * 28 * 1280)
    low = config.min_pixels or folder_min
    high = min(config.max_pixels, folder_max) if config.max_pixels else folder_max
    if low > high:
        raise SvlmError(f"min_pixels {low} is above the effective max_pixels {high}")
    processor.size = {"shortest_edge": low, "longest_edge": high}
    return (
        f"image {low}..{high} px (the folder's {folder_min}..{folder_max}"
        + (f", capped by max_pixels {config.max_pixels}" if high < folder_max else "")
        + f"), patch {patch}, merge {merge}, mean {list(processor.image_mean)}"
    )


def _generation_config(folder: Path, config: QwenSvlmConfig, notes: list[str]) -> list[int]:
    """The folder's end-of-answer token ids; its sampling settings are named as unused."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise SvlmError(f"{path} is not valid JSON: {exc}") from exc
    eos = data.get("eos_token_id", [])
    stop_ids = [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
    sampling = {k: data[k] for k in SAMPLING_KEYS if k in data}
    if sampling:
        notes.append(
            f"generation_config.json asks for {sampling}: not used, decoding is greedy up to "
            f"max_new_tokens {config.max_new_tokens} (svlm_node's parameters)"
        )
    return stop_ids


class QwenSvlm:
    """Qwen2.5-VL inference with GGVR token pruning and GTVR token reweighting."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        config: QwenSvlmConfig,
        is_test_model: bool,
        *,
        use_chat_template: bool = False,
        stop_ids: Sequence[int] = (),
        notes: Sequence[str] = (),
    ) -> None:
        """``use_chat_template``: render prompts with the tokenizer's own template (a model
        folder's); ``stop_ids``: more tokens that end an answer (the folder's eos ids);
        ``notes``: what loading found worth saying (the node logs them)."""
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        self.is_test_model = is_test_model
        self.device = next(model.parameters()).device
        # per frame: (N, D) features, the grid, and which tokens were encoded (None: all)
        self._features: OrderedDict[Stamp, HeldFeatures] = OrderedDict()
        self.image_token_id = int(model.config.image_token_id)
        self._stop_ids = {
            i
            for i in (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
            if isinstance(i, int) and i >= 0
        } | {int(i) for i in stop_ids}
        self.use_chat_template = use_chat_template
        self.notes = list(notes)

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, config: QwenSvlmConfig) -> QwenSvlm:
        """Load model, tokenizer and image processor named by ``config.model``.

        Everything the folder says about the model is read from it: the weights (published
        transformers 4.x names or current ones; a weight missing is an error, never a silent
        random initialisation), the image processor's patch and merge sizes, normalisation
        and pixel range (capped by ``config.max_pixels``), the chat template, and the end
        of answer tokens. Its ``generation_config.json`` sampling settings are not used:
        decoding is greedy and ``max_new_tokens`` long, as configured here (said in notes).
        """
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        check_transformers()
        device = _resolve_device(config.device)
        dtype = _resolve_dtype(config.dtype, device)
        source = config.model
        local = Path(source).expanduser()
        problem = model_source_problem(source, MODEL_PARAMETER)
        if problem is not None:
            raise SvlmError(problem)
        where = str(local) if local.exists() else source
        offline = config.local_files_only or hub_offline()
        try:
            # (model, loading info): transformers' annotation does not say so
            loaded: Any = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                where,
                dtype=dtype,
                trust_remote_code=False,
                local_files_only=offline,
                attn_implementation=ATTENTION,
                output_loading_info=True,
            )
            model, info = loaded
            tokenizer = AutoTokenizer.from_pretrained(
                where, trust_remote_code=False, local_files_only=offline
            )
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(
                where, local_files_only=offline
            )
        except (OSError, ValueError) as exc:
            if local.exists():
                raise SvlmError(f"could not load the SVLM from {local}: {exc}") from exc
            raise SvlmError(
                f"could not load the SVLM {source!r} (parameter `{MODEL_PARAMETER}`): it is not a "
                "local folder and the model hub could not provide it (no network, or no such "
                "model). Download the weights where the hub is reachable and set "
                f"`{MODEL_PARAMETER}` to the folder. ({type(exc).__name__}: {exc})"
            ) from exc
        notes = [
            f"{where}: {device.type} {str(dtype).removeprefix('torch.')}, attention {ATTENTION}"
        ]
        _check_weights(where, info, notes)
        notes.append(_image_settings(image_processor, model.config, config))
        use_template = bool(getattr(tokenizer, "chat_template", None))
        if use_template:
            try:
                render_with_template(tokenizer, "?", image_tokens=1)
            except Exception as exc:  # a template that cannot render one image and a question
                raise SvlmError(f"{where}: its chat template cannot be used: {exc}") from exc
            notes.append("chat template: the folder's own")
        else:
            notes.append("chat template: none in the folder, Qwen2.5-VL's format")
        stop_ids = _generation_config(local, config, notes) if local.exists() else []
        model.to(device).eval()
        config_file = local / "config.json"
        is_test = config_file.is_file() and bool(
            json.loads(config_file.read_text()).get(TEST_MODEL_MARKER)
        )
        if is_test:
            LOG.warning(
                "SVLM %s is a RANDOMLY INITIALISED TEST MODEL: its answers are meaningless. "
                "Set `%s` to a real Qwen2.5-VL folder (e.g. Qwen2.5-VL-3B-Instruct).",
                source,
                MODEL_PARAMETER,
            )
        return cls(
            model,
            tokenizer,
            image_processor,
            config,
            is_test,
            use_chat_template=use_template,
            stop_ids=stop_ids,
            notes=notes,
        )

    def count_tokens(self, text: str) -> int:
        """How many of this model's tokens ``text`` takes in the prompt."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # --- inputs -------------------------------------------------------------------------

    def _pixels(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, TokenGrid]:
        out = self.image_processor(images=[Image.fromarray(rgb)], return_tensors="pt")
        grid_thw = out["image_grid_thw"]  # (1, 3): t, h, w in patches
        _, gh, gw = (int(v) for v in grid_thw[0])
        patch = int(self.model.config.vision_config.patch_size)
        merge = int(self.model.config.vision_config.spatial_merge_size)
        grid = TokenGrid(rgb.shape[1], rgb.shape[0], gw * patch, gh * patch, patch, merge)
        return out["pixel_values"].to(self.device), grid_thw.to(self.device), grid

    def visual_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """The merged visual tokens of one image, (N, D)."""
        out = self.model.model.get_image_features(pixel_values, grid_thw)
        features: torch.Tensor = out.pooler_output[0]
        return features

    @torch.inference_mode()
    def prepare(
        self,
        image: Any,
        question: str,
        *,
        stamp: Stamp | None = None,
        context_text: str = "",
        history: Sequence[dict[str, str]] = (),
        focus: Focus | None = None,
        ggvr: bool = False,
        gtvr: bool = False,
    ) -> Prepared:
        """Build the LM's inputs for a frame, applying GTVR and GGVR as asked."""
        rgb = as_rgb(image)
        pixel_values, grid_thw, grid = self._pixels(rgb)
        n_visual = grid.size
        render = (
            partial(render_with_template, self.tokenizer)
            if self.use_chat_template
            else build_prompt
        )
        try:
            prompt = render(
                question,
                image_tokens=n_visual,
                context_text=context_text,
                history=history,
                system=self.config.system_prompt,
            )
        except ValueError as exc:
            raise SvlmError(str(exc)) from exc
        input_ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"].to(self.device)
        is_image = input_ids[0] == self.image_token_id  # (L,)
        if int(is_image.sum()) != n_visual:
            raise SvlmError(
                f"prompt holds {int(is_image.sum())} {IMAGE_PAD} tokens, expected {n_visual}: "
                "the tokenizer does not know Qwen2.5-VL's special tokens"
            )
        mm_token_type_ids = is_image.to(torch.int32)[None]
        attention_mask = torch.ones_like(input_ids)
        position_ids, _ = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids, grid_thw, attention_mask=attention_mask
        )  # (3, 1, L)

        ggvr_notes: list[str] = []
        selected = self._ggvr_selection(grid, focus, ggvr_notes) if ggvr else None
        patches_full = int(pixel_values.shape[0])
        encoded: torch.Tensor | None = None  # tokens the encoder produced, if not all
        if selected is not None and self.config.focus_stage == "encoder":
            # Encoder-side focus: only the windows the grown ROI tokens touch are encoded;
            # the LM gets the grown ROI tokens.
            margin = self.config.focus_margin_tokens
            grown = grow_tokens(selected.tolist(), grid.rows, grid.cols, margin)
            try:
                focused = encode_focused(
                    self.model.model.visual,
                    pixel_values,
                    grid_thw,
                    grown,
                    whole_windows=self.config.encoder_scope == "windows",
                )
            except EncoderFocusError as exc:
                raise SvlmError(f"encoder-side focus: {exc}") from exc
            features = focused.features  # (K, D): the touched windows' tokens (or the grown)
            encoded = focused.indices
            patches = focused.patches
            selected = torch.tensor(grown, dtype=torch.long, device=self.device)
            ggvr_notes.append(
                f"encoder focus ({self.config.encoder_scope}): "
                f"{len(focused.selection.windows)} windows, {patches}/"
                f"{patches_full} patches encoded, {len(grown)} tokens to the LM (ROI tokens "
                f"grown by {margin})"
            )
        else:
            features = self.visual_features(pixel_values, grid_thw)  # (N, D)
            patches = patches_full
        if stamp is not None:
            # The encoder's own features: what a later frame's GTVR compares against.
            self._remember(stamp, features, grid, encoded)
        notes: list[str] = []
        gtvr_applied = False
        if gtvr:
            features, gtvr_applied = self._gtvr(features, focus, notes)
        notes.extend(ggvr_notes)

        embeds = self.model.get_input_embeddings()(input_ids)  # (1, L, D)
        embeds = embeds.clone()
        image_positions = torch.nonzero(is_image).flatten()  # (N,)
        if encoded is None:
            embeds[0, is_image] = features.to(embeds.dtype)
        else:
            # the positions of the tokens not encoded keep their pad embedding: all dropped
            embeds[0, image_positions[encoded]] = features.to(embeds.dtype)

        kept = torch.arange(input_ids.shape[1], device=self.device)
        used = n_visual
        ggvr_applied = False
        if selected is not None:
            keep_mask = ~is_image
            keep_mask[image_positions[selected]] = True
            kept = torch.nonzero(keep_mask).flatten()
            used = len(selected)
            ggvr_applied = True
        return Prepared(
            inputs_embeds=embeds[:, kept],
            position_ids=position_ids[:, :, kept],
            kept=kept,
            full_position_ids=position_ids,
            input_ids=input_ids,
            grid=grid,
            visual_tokens_full=n_visual,
            visual_tokens_used=used,
            ggvr_applied=ggvr_applied,
            gtvr_applied=gtvr_applied,
            notes=notes,
            focus_stage="none" if not ggvr_applied else "lm" if encoded is None else "encoder",
            encoder_patches=patches,
            encoder_patches_full=patches_full,
        )

    # --- visual focus -------------------------------------------------------------------

    def _ggvr_selection(
        self, grid: TokenGrid, focus: Focus | None, notes: list[str]
    ) -> torch.Tensor | None:
        if focus is None or not focus.rois:
            notes.append("GGVR: no ROIs, full image")
            return None
        indices = focus_token_indices(list(focus.rois), grid)
        if len(indices) < self.config.min_focus_tokens:
            notes.append(
                f"GGVR: ROIs cover {len(indices)} tokens (< min_focus_tokens "
                f"{self.config.min_focus_tokens}), full image"
            )
            return None
        if len(indices) == grid.size:
            notes.append("GGVR: ROIs cover the whole image")
        return torch.tensor(indices, dtype=torch.long, device=self.device)

    def _gtvr(
        self, features: torch.Tensor, focus: Focus | None, notes: list[str]
    ) -> tuple[torch.Tensor, bool]:
        if focus is None or not focus.rois:
            notes.append("GTVR: no ROIs")
            return features, False
        held = self._features.get(focus.source_stamp)
        if held is None:
            notes.append("GTVR: features of the ROI frame are no longer held")
            return features, False
        past, past_grid, past_encoded = held
        groups = roi_token_groups(list(focus.rois), past_grid)
        if not groups:
            notes.append("GTVR: ROIs cover no tokens of their frame")
            return features, False
        if past_encoded is not None:
            # That frame was encoded with encoder-side focus: only its encoded tokens count.
            groups = {
                label: tuple(i for i in idx if bool(past_encoded[i]))
                for label, idx in groups.items()
            }
            groups = {label: idx for label, idx in groups.items() if idx}
            if not groups:
                notes.append("GTVR: the ROIs' tokens were not encoded in their frame")
                return features, False
        # f_c: mean past feature per label, (C, D)
        prototypes = torch.stack(
            [past[torch.tensor(idx, device=past.device)].mean(dim=0) for idx in groups.values()]
        )
        cfg = self.config
        return gtvr_update(features, prototypes, cfg.gtvr_mu, cfg.gtvr_b, cfg.gtvr_alpha), True

    def _remember(
        self,
        stamp: Stamp,
        features: torch.Tensor,
        grid: TokenGrid,
        encoded: torch.Tensor | None = None,
    ) -> None:
        """Hold a frame's features for a later frame's GTVR. ``encoded``: the token indices
        of ``features``' rows when the encoder produced only those (encoder-side focus);
        they are held in a whole-frame (N, D) tensor with a mask of the encoded tokens."""
        mask: torch.Tensor | None = None
        if encoded is not None:
            full = features.new_zeros((grid.size, features.shape[1]))
            full[encoded] = features
            mask = torch.zeros(grid.size, dtype=torch.bool, device=features.device)
            mask[encoded] = True
            features = full
        self._features[stamp] = HeldFeatures(features.detach(), grid, mask)
        self._features.move_to_end(stamp)
        while len(self._features) > self.config.feature_cache_frames:
            self._features.popitem(last=False)

    def forget_features(self) -> None:
        """Drop every held frame's features (a new sequence starts)."""
        self._features.clear()

    def held_feature_stamps(self) -> list[Stamp]:
        """Stamps of the frames whose visual features GTVR can still use."""
        return list(self._features)

    # --- LM -----------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill_logits(self, prepared: Prepared) -> torch.Tensor:
        """Logits of every kept prompt position, (1, L_kept, vocab) (for tests and benchmarks)."""
        logits: torch.Tensor = self.model(
            inputs_embeds=prepared.inputs_embeds,
            position_ids=prepared.position_ids,
            attention_mask=torch.ones(
                prepared.inputs_embeds.shape[:2], dtype=torch.long, device=self.device
            ),
            use_cache=False,
        ).logits
        return logits

    @torch.inference_mode()
    def generate(
        self,
        prepared: Prepared,
        max_new_tokens: int | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> Generated:
        """Greedy decoding with the KV cache: the token ids, the prefill's seconds and the
        answer's confidence (the geometric mean of each chosen token's probability).

        ``on_token(n)`` is called after the n-th new token (svlm_node's test hold uses it).
        """
        limit = max_new_tokens or self.config.max_new_tokens
        length = prepared.inputs_embeds.shape[1]
        start = time.perf_counter()
        out = self.model(
            inputs_embeds=prepared.inputs_embeds,
            position_ids=prepared.position_ids,
            attention_mask=torch.ones((1, length), dtype=torch.long, device=self.device),
            use_cache=True,
            logits_to_keep=1,
        )
        prefill = time.perf_counter() - start
        cache = out.past_key_values
        # The prompt ends with text, whose three M-RoPE indices are equal; new tokens continue
        # from there. With pruning, this differs from the cache length: that is the rope delta.
        next_position = int(prepared.position_ids[0, 0, -1]) + 1
        tokens: list[int] = []
        log_probs: list[float] = []
        logits = out.logits[0, -1].float()
        token = int(logits.argmax())
        log_probs.append(float(torch.log_softmax(logits, -1)[token]))
        embed = self.model.get_input_embeddings()
        while True:
            tokens.append(token)
            if on_token is not None:
                on_token(len(tokens))
            if token in self._stop_ids or len(tokens) >= limit:
                break
            position = torch.full((3, 1, 1), next_position, dtype=torch.long, device=self.device)
            next_position += 1
            length += 1
            out = self.model(
                inputs_embeds=embed(torch.tensor([[token]], device=self.device)),
                position_ids=position,
                attention_mask=torch.ones((1, length), dtype=torch.long, device=self.device),
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[0, -1].float()
            token = int(logits.argmax())
            log_probs.append(float(torch.log_softmax(logits, -1)[token]))
        confidence = math.exp(sum(log_probs[: len(tokens)]) / len(tokens))
        return Generated(tokens, prefill, confidence)

    # --- one frame ----------------------------------------------------------------------

    def infer_frame(
        self,
        image: Any,
        question: str,
        stamp: Stamp,
        inputs: SvlmInputs,
        on_token: Callable[[int], None] | None = None,
    ) -> SvlmOutput:
        """Answer about the frame at ``stamp`` with the inputs the engine chose for it
        (core.engine.svlm_inputs: history as text or chat turns, ROIs, GGVR/GTVR): what
        svlm_node and the replay both run."""
        focus = Focus(inputs.rois, inputs.roi_stamp) if inputs.roi_stamp is not None else None
        return self.infer(
            image,
            question,
            stamp=stamp,
            context_text=inputs.context_text,
            history=list(inputs.chat),
            focus=focus,
            ggvr=inputs.ggvr,
            gtvr=inputs.gtvr,
            on_token=on_token,
        )

    def infer(
        self,
        image: Any,
        question: str,
        *,
        stamp: Stamp | None = None,
        context_text: str = "",
        history: Sequence[dict[str, str]] = (),
        focus: Focus | None = None,
        ggvr: bool = False,
        gtvr: bool = False,
        max_new_tokens: int | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> SvlmOutput:
        """Answer ``question`` about ``image`` (H x W x 3 RGB uint8)."""
        start = time.perf_counter()
        prepared = self.prepare(
            image,
            question,
            stamp=stamp,
            context_text=context_text,
            history=history,
            focus=focus,
            ggvr=ggvr,
            gtvr=gtvr,
        )
        prepare_time = time.perf_counter() - start
        tokens, prefill, confidence = self.generate(prepared, max_new_tokens, on_token)
        total = time.perf_counter() - start
        answer = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return SvlmOutput(
            answer=answer,
            latency=total,
            prefill_latency=prepare_time + prefill,
            generate_latency=total - prepare_time - prefill,
            generated_tokens=len(tokens),
            visual_tokens_used=prepared.visual_tokens_used,
            visual_tokens_full=prepared.visual_tokens_full,
            ggvr_applied=prepared.ggvr_applied,
            gtvr_applied=prepared.gtvr_applied,
            focus_note="; ".join(prepared.notes),
            stopped=bool(tokens) and tokens[-1] in self._stop_ids,
            confidence=confidence,
            focus_stage=prepared.focus_stage,
            encoder_patches=prepared.encoder_patches,
            encoder_patches_full=prepared.encoder_patches_full,
        )
