"""Encoder-side focus: run Qwen2.5-VL's vision tower on the windows the ROIs touch only.

Qwen2.5-VL's vision tower cuts the resized image into patches (14 px), groups them by
``merge x merge`` into merged tokens (28 px, the LM's visual tokens) and tiles the merged
grid with square windows of ``window_size // patch_size // merge`` tokens a side (112 px,
4 x 4 tokens for the published models), anchored at the top left; the windows at the
right and bottom edges are partial where the grid is not a multiple of the window. Every
block but the full-attention ones (``fullatt_block_indexes``) attends within a window only,
and the merger maps each merged token's patches to one LM token on its own. So the
patches of the windows that the ROIs touch can be encoded alone:

* every patch keeps its own 2D rotary position (its row and column in the whole image);
* the window blocks see exactly the windows they see on the whole frame;
* the full-attention blocks attend over the selected patches only, not the whole image:
  this is the ONLY difference from encoding the whole frame. A tower without
  full-attention blocks gives the kept tokens exactly the whole frame's features.

``whole_windows=False`` (svlm_node's ``encoder_scope: tokens``) encodes only the patches
of the given tokens, each window's share of them attending within itself: cheaper (the
encoder's cost follows the tokens the LM gets, not the windows they touch), and further
from the whole frame (the window blocks, too, see fewer patches wherever the tokens do not
fill a window).

The patches of ``pixel_values`` are ordered as the image processor writes them: merged
token by merged token (row-major over the merged grid), each token's ``merge * merge``
patches contiguous (row-major inside the token).

Only one image (t = 1) per call: video and several images are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


class EncoderFocusError(ValueError):
    """The input cannot be encoded with encoder-side focus; the message says why."""


def window_side(window_size: int, patch_size: int, merge_size: int) -> int:
    """A window's side in merged tokens, as the tower computes it."""
    side = window_size // merge_size // patch_size
    if side < 1:
        raise EncoderFocusError(
            f"window_size {window_size} is smaller than one merged token "
            f"({patch_size} px x {merge_size}): no windows"
        )
    return side


@dataclass(frozen=True)
class WindowSelection:
    """The windows that a set of merged tokens touches, in the vision tower's order.

    Attributes:
        rows, cols: the merged-token grid.
        side: a window's side in merged tokens.
        windows: the touched windows, numbered row-major over the window grid
            (``ceil(rows / side)`` x ``ceil(cols / side)``), ascending: the tower's order.
        tokens: every merged token of the touched windows, window after window, row-major
            inside each window (the tower's window order).
        lengths: merged tokens per touched window (the edge windows may be partial).
    """

    rows: int
    cols: int
    side: int
    windows: tuple[int, ...]
    tokens: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def window_cols(self) -> int:
        """Windows per window row."""
        return -(-self.cols // self.side)

    @property
    def window_rows(self) -> int:
        """Window rows."""
        return -(-self.rows // self.side)


def _check_tokens(tokens: Iterable[int], rows: int, cols: int) -> list[int]:
    if rows < 1 or cols < 1:
        raise EncoderFocusError(f"the merged grid must be at least 1 x 1, got {rows} x {cols}")
    checked = sorted({int(t) for t in tokens})
    if checked and (checked[0] < 0 or checked[-1] >= rows * cols):
        raise EncoderFocusError(
            f"token index out of the {rows} x {cols} merged grid: {checked[0]}..{checked[-1]}"
        )
    return checked


def window_selection(
    grid_h: int,
    grid_w: int,
    merge_size: int,
    window_size: int,
    patch_size: int,
    token_indices: Iterable[int],
    whole_windows: bool = True,
) -> WindowSelection:
    """The windows touched by ``token_indices`` (row-major on the merged grid) and all the
    merged tokens inside them (only ``token_indices`` with ``whole_windows=False``), in the
    vision tower's window order.

    ``grid_h``, ``grid_w``: the patch grid (the processor's ``image_grid_thw`` h and w).
    """
    if grid_h % merge_size or grid_w % merge_size:
        raise EncoderFocusError(
            f"patch grid {grid_h} x {grid_w} is not a multiple of the merge size {merge_size}"
        )
    rows, cols = grid_h // merge_size, grid_w // merge_size
    side = window_side(window_size, patch_size, merge_size)
    tokens = _check_tokens(token_indices, rows, cols)
    window_cols = -(-cols // side)
    touched = sorted({(t // cols // side) * window_cols + (t % cols) // side for t in tokens})
    ordered: list[int] = []
    lengths: list[int] = []
    wanted = set(tokens)
    for window in touched:
        r0, c0 = (window // window_cols) * side, (window % window_cols) * side
        inside = [
            r * cols + c
            for r in range(r0, min(r0 + side, rows))
            for c in range(c0, min(c0 + side, cols))
            if whole_windows or r * cols + c in wanted
        ]
        ordered.extend(inside)
        lengths.append(len(inside))
    return WindowSelection(rows, cols, side, tuple(touched), tuple(ordered), tuple(lengths))


def grow_tokens(token_indices: Iterable[int], rows: int, cols: int, margin: int) -> tuple[int, ...]:
    """``token_indices`` grown by ``margin`` tokens in each direction (a square dilation on
    the merged grid, clipped to it), sorted."""
    if margin < 0:
        raise EncoderFocusError(f"margin must be >= 0, got {margin}")
    tokens = _check_tokens(token_indices, rows, cols)
    if margin == 0:
        return tuple(tokens)
    grown: set[int] = set()
    for t in tokens:
        r, c = divmod(t, cols)
        for rr in range(max(0, r - margin), min(rows, r + margin + 1)):
            grown.update(
                rr * cols + cc for cc in range(max(0, c - margin), min(cols, c + margin + 1))
            )
    return tuple(sorted(grown))


@dataclass(frozen=True)
class FocusedFeatures:
    """What the vision tower produced for the touched windows.

    Attributes:
        features: (K, D) the merged tokens' features, in ascending token order.
        indices: (K,) their merged-token indices (row-major on the merged grid), ascending.
        patches: how many patches the tower encoded (K * merge * merge).
        patches_full: how many the whole frame has.
        selection: the touched windows.
    """

    features: torch.Tensor
    indices: torch.Tensor
    patches: int
    patches_full: int
    selection: WindowSelection


def selected_patches(
    tokens: torch.Tensor, cols: int, merge_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patches of the merged ``tokens`` (in the given order): their rows in
    ``pixel_values`` (K * merge * merge,) and their (h, w) in the whole image's patch grid
    (K * merge * merge, 2), each token's patches contiguous and row-major inside it."""
    unit = merge_size * merge_size
    inner = torch.arange(unit, device=tokens.device)
    rows = (tokens[:, None] * unit + inner[None, :]).reshape(-1)
    token_r, token_c = tokens // cols, tokens % cols
    pos_h = (token_r[:, None] * merge_size + (inner // merge_size)[None, :]).reshape(-1)
    pos_w = (token_c[:, None] * merge_size + (inner % merge_size)[None, :]).reshape(-1)
    return rows, torch.stack([pos_h, pos_w], dim=-1)


def _one_image_grid(grid_thw: torch.Tensor) -> tuple[int, int]:
    if grid_thw.ndim != 2 or grid_thw.shape[0] != 1 or grid_thw.shape[1] != 3:
        raise EncoderFocusError(
            f"encoder-side focus takes one image (grid_thw of shape (1, 3)), got "
            f"{tuple(grid_thw.shape)}: several images are not supported"
        )
    t, h, w = (int(v) for v in grid_thw[0].tolist())
    if t != 1:
        raise EncoderFocusError(
            f"encoder-side focus takes one image (t = 1), got t = {t}: video is not supported"
        )
    return h, w


def encode_focused(
    visual: Any,
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    token_indices: Iterable[int],
    whole_windows: bool = True,
) -> FocusedFeatures:
    """Run the vision tower ``visual`` (transformers' Qwen2.5-VL vision model) on the
    patches of the windows that ``token_indices`` touch, and nothing else (only the
    patches of ``token_indices`` with ``whole_windows=False``).

    Mirrors the tower's own forward with its own modules: patch embedding, the 2D rotary
    embedding at each patch's position in the whole image, the window blocks over the
    touched windows (one attention segment per window), the full-attention blocks over all
    the selected patches (one segment), the merger. The blocks are called as the tower's
    forward calls them, so the model's attention implementation is the one used.

    ``pixel_values``: (grid_h * grid_w, C * T * P * P), the processor's output for one
    image; ``grid_thw``: (1, 3) with t = 1.
    """
    grid_h, grid_w = _one_image_grid(grid_thw)
    merge = int(visual.spatial_merge_size)
    unit = merge * merge
    if pixel_values.shape[0] != grid_h * grid_w:
        raise EncoderFocusError(
            f"pixel_values has {pixel_values.shape[0]} patches, grid_thw says {grid_h * grid_w}"
        )
    selection = window_selection(
        grid_h,
        grid_w,
        merge,
        int(visual.window_size),
        int(visual.patch_size),
        token_indices,
        whole_windows,
    )
    device = pixel_values.device
    if not selection.tokens:
        raise EncoderFocusError("no tokens to encode")
    tokens = torch.tensor(selection.tokens, dtype=torch.long, device=device)  # (K,) window order
    patch_rows, position_ids = selected_patches(tokens, selection.cols, merge)
    hidden = visual.patch_embed(pixel_values[patch_rows].type(visual.dtype))
    position_embeddings = visual.rotary_pos_emb(hidden, position_ids)

    n = int(patch_rows.shape[0])
    window_lengths = torch.tensor(selection.lengths, dtype=torch.int32, device=device) * unit
    cu_windows = torch.nn.functional.pad(window_lengths.cumsum(0, dtype=torch.int32), (1, 0))
    cu_full = torch.tensor([0, n], dtype=torch.int32, device=device)
    max_window = int(window_lengths.max())
    full_blocks = {int(i) for i in visual.fullatt_block_indexes}
    for index, block in enumerate(visual.blocks):
        full = index in full_blocks
        hidden = block(
            hidden,
            cu_seqlens=cu_full if full else cu_windows,
            max_seqlen=n if full else max_window,
            position_embeddings=position_embeddings,
        )
    merged = visual.merger(hidden)  # (K, D) in window order
    order = torch.argsort(tokens)
    return FocusedFeatures(
        features=merged[order],
        indices=tokens[order],
        patches=n,
        patches_full=grid_h * grid_w,
        selection=selection,
    )
