"""Encoder-side focus: the vision tower run on the windows the ROIs touch only."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from spotvlm_ros.core.types import Box, Roi  # noqa: E402
from spotvlm_ros.svlm.encoder_focus import (  # noqa: E402
    EncoderFocusError,
    encode_focused,
    grow_tokens,
    selected_patches,
    window_selection,
)
from spotvlm_ros.svlm.qwen import Focus, QwenSvlm, QwenSvlmConfig, SvlmError  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402

Q = "Which objects are in the image?"

# A 10 x 14 patch grid: 5 x 7 merged tokens, 4 x 4-token windows (112 px), so the windows
# are 2 x 2 with partial ones at the right (3 columns) and the bottom (1 row):
#
#     token:  0  1  2  3 |  4  5  6        window 0 | window 1
#             7  8  9 10 | 11 12 13
#            14 15 16 17 | 18 19 20
#            21 22 23 24 | 25 26 27
#            ------------+---------
#            28 29 30 31 | 32 33 34        window 2 | window 3
GRID_H, GRID_W = 10, 14


def test_the_touched_windows_and_their_tokens_for_a_hand_worked_grid() -> None:
    selection = window_selection(GRID_H, GRID_W, 2, 112, 14, [12, 33])
    assert (selection.rows, selection.cols, selection.side) == (5, 7, 4)
    assert selection.windows == (1, 3)
    assert selection.tokens == (4, 5, 6, 11, 12, 13, 18, 19, 20, 25, 26, 27, 32, 33, 34)
    assert selection.lengths == (12, 3)  # both partial: the right and bottom-right edges
    corner = window_selection(GRID_H, GRID_W, 2, 112, 14, [0, 28])
    assert corner.windows == (0, 2)
    assert corner.tokens == (*[r * 7 + c for r in range(4) for c in range(4)], 28, 29, 30, 31)
    assert corner.lengths == (16, 4)


def test_the_tokens_scope_keeps_only_the_given_tokens_grouped_by_window() -> None:
    selection = window_selection(GRID_H, GRID_W, 2, 112, 14, [33, 12, 4, 5], whole_windows=False)
    assert selection.windows == (1, 3)
    assert selection.tokens == (4, 5, 12, 33)  # window 1's, then window 3's
    assert selection.lengths == (3, 1)


def test_the_kept_patches_keep_their_own_positions() -> None:
    rows, positions = selected_patches(torch.tensor([33, 5]), cols=7, merge_size=2)
    assert rows.tolist() == [132, 133, 134, 135, 20, 21, 22, 23]
    # token 33 is merged row 4, column 5: patches rows 8-9, columns 10-11
    # token 5 is merged row 0, column 5: patches rows 0-1, columns 10-11
    expected = [[8, 10], [8, 11], [9, 10], [9, 11], [0, 10], [0, 11], [1, 10], [1, 11]]
    assert positions.tolist() == expected


def test_the_whole_grid_is_laid_out_as_the_towers_own_window_index() -> None:
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    for grid_h, grid_w in ((10, 14), (16, 16), (2, 2), (6, 18), (26, 46)):
        grid_thw = torch.tensor([[1, grid_h, grid_w]])
        index, cu_windows = get_vision_window_index(grid_thw, 2, 112, 14)
        n = grid_h * grid_w // 4
        selection = window_selection(grid_h, grid_w, 2, 112, 14, range(n))
        assert list(selection.tokens) == index.tolist()
        assert [0, *np.cumsum(selection.lengths) * 4] == cu_windows.tolist()
        rows, positions = selected_patches(torch.arange(n), grid_w // 2, 2)
        assert rows.tolist() == list(range(grid_h * grid_w))
        assert torch.equal(positions, get_vision_position_ids(grid_thw, 2))


def test_the_margin_grows_the_tokens_clipped_to_the_grid() -> None:
    assert grow_tokens([12], 5, 7, 0) == (12,)
    assert grow_tokens([12], 5, 7, 1) == (4, 5, 6, 11, 12, 13, 18, 19, 20)
    assert grow_tokens([0], 5, 7, 1) == (0, 1, 7, 8)
    assert grow_tokens([34], 5, 7, 2) == (18, 19, 20, 25, 26, 27, 32, 33, 34)
    with pytest.raises(EncoderFocusError, match="margin"):
        grow_tokens([0], 5, 7, -1)
    with pytest.raises(EncoderFocusError, match="out of the 5 x 7"):
        grow_tokens([35], 5, 7, 1)


def _tower(fullatt: list[int]) -> torch.nn.Module:
    from transformers import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
    )

    torch.manual_seed(0)
    config = Qwen2_5_VLVisionConfig(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=48,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=fullatt,
    )
    config._attn_implementation = "sdpa"
    return Qwen2_5_VisionTransformerPretrainedModel(config).eval()


def _pixels() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(GRID_H * GRID_W, 3 * 2 * 14 * 14, generator=generator)
    return pixel_values, torch.tensor([[1, GRID_H, GRID_W]])


@torch.inference_mode()
def _whole(
    tower: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor
) -> torch.Tensor:
    whole: torch.Tensor = tower(pixel_values, grid_thw=grid_thw).pooler_output
    return whole


def test_the_output_has_one_feature_per_token_of_the_touched_windows() -> None:
    tower = _tower([1])
    pixel_values, grid_thw = _pixels()
    with torch.inference_mode():
        out = encode_focused(tower, pixel_values, grid_thw, [12, 33])
    assert out.features.shape == (15, 48)
    assert out.indices.tolist() == sorted(out.selection.tokens)
    assert (out.patches, out.patches_full) == (60, 140)
    assert torch.isfinite(out.features).all()


def test_rois_covering_the_frame_give_the_whole_frames_encoding() -> None:
    tower = _tower([1])
    pixel_values, grid_thw = _pixels()
    with torch.inference_mode():
        out = encode_focused(tower, pixel_values, grid_thw, range(35))
    assert out.indices.tolist() == list(range(35))
    assert out.patches == out.patches_full
    torch.testing.assert_close(
        out.features, _whole(tower, pixel_values, grid_thw), atol=1e-5, rtol=1e-5
    )


def test_without_full_attention_blocks_the_kept_tokens_equal_lm_side_focus() -> None:
    tower = _tower([])
    pixel_values, grid_thw = _pixels()
    whole = _whole(tower, pixel_values, grid_thw)
    for tokens in ([12, 33], [0], [30, 31, 32]):
        with torch.inference_mode():
            out = encode_focused(tower, pixel_values, grid_thw, tokens)
        assert out.patches < out.patches_full
        torch.testing.assert_close(out.features, whole[out.indices], atol=1e-5, rtol=1e-5)


def test_with_full_attention_blocks_the_kept_tokens_are_encoded_from_fewer_patches() -> None:
    tower = _tower([1])
    pixel_values, grid_thw = _pixels()
    whole = _whole(tower, pixel_values, grid_thw)
    with torch.inference_mode():
        out = encode_focused(tower, pixel_values, grid_thw, [12])
    # The full-attention block saw one window instead of the frame: features differ in
    # general (no threshold is asserted: with random weights the gap means nothing).
    assert out.features.shape == whole[out.indices].shape


def test_the_tokens_scope_encodes_only_the_tokens_and_equals_windows_on_whole_windows() -> None:
    tower = _tower([1])
    pixel_values, grid_thw = _pixels()
    window_1 = [4, 5, 6, 11, 12, 13, 18, 19, 20, 25, 26, 27]  # a whole (partial-edge) window
    with torch.inference_mode():
        few = encode_focused(tower, pixel_values, grid_thw, [12, 33], whole_windows=False)
        scoped = encode_focused(tower, pixel_values, grid_thw, window_1, whole_windows=False)
        windows = encode_focused(tower, pixel_values, grid_thw, window_1)
    assert few.indices.tolist() == [12, 33]
    assert (few.features.shape, few.patches) == ((2, 48), 8)
    assert scoped.patches == windows.patches == 48
    torch.testing.assert_close(scoped.features, windows.features, atol=1e-5, rtol=1e-5)


def test_video_and_several_images_are_refused() -> None:
    tower = _tower([1])
    pixel_values, _ = _pixels()
    with pytest.raises(EncoderFocusError, match="video"):
        encode_focused(tower, pixel_values, torch.tensor([[2, GRID_H, GRID_W // 2]]), [0])
    with pytest.raises(EncoderFocusError, match="several images"):
        encode_focused(tower, pixel_values, torch.tensor([[1, GRID_H, 8], [1, GRID_H, 6]]), [0])


# --- in QwenSvlm, with the tiny model -------------------------------------------------------


@pytest.fixture(scope="module")
def aligned() -> np.ndarray:
    """588x336 px: already a multiple of 28 (12 x 21 tokens, 3 x 6 windows)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(336, 588, 3), dtype=np.uint8)


def _svlm(stage: str, margin: int = 0) -> QwenSvlm:
    config = QwenSvlmConfig(
        model=str(tiny_model_dir()), focus_stage=stage, focus_margin_tokens=margin
    )
    return QwenSvlm.load(config)


FOCUS = Focus([Roi("car", Box(2 * 28, 3 * 28, 9 * 28, 10 * 28))], source_stamp=1)  # 7 x 7 tokens


def test_encoder_stage_keeps_the_lm_stages_tokens_and_positions(aligned: np.ndarray) -> None:
    lm = _svlm("lm").prepare(aligned, Q, focus=FOCUS, ggvr=True)
    encoder = _svlm("encoder").prepare(aligned, Q, focus=FOCUS, ggvr=True)
    assert lm.focus_stage == "lm"
    assert encoder.focus_stage == "encoder"
    assert encoder.visual_tokens_used == lm.visual_tokens_used == 49
    assert torch.equal(encoder.kept, lm.kept)
    assert torch.equal(encoder.position_ids, lm.position_ids)
    assert lm.encoder_patches == lm.encoder_patches_full == 252 * 4
    # tokens rows 3-9, columns 2-8: window rows 0-2 x columns 0-2 -> 9 windows of 16 tokens
    assert encoder.encoder_patches == 9 * 16 * 4
    assert encoder.encoder_patches < encoder.encoder_patches_full
    assert "encoder focus (windows): 9 windows" in "; ".join(encoder.notes)
    # the text positions are the same embeddings
    is_text = lm.input_ids[0, lm.kept] != _svlm("lm").image_token_id
    torch.testing.assert_close(encoder.inputs_embeds[0, is_text], lm.inputs_embeds[0, is_text])


def test_the_margin_grows_what_the_lm_gets(aligned: np.ndarray) -> None:
    prepared = _svlm("encoder", margin=1).prepare(aligned, Q, focus=FOCUS, ggvr=True)
    assert prepared.visual_tokens_used == 9 * 9


def test_encoder_stage_without_rois_encodes_the_whole_frame(aligned: np.ndarray) -> None:
    svlm = _svlm("encoder")
    whole = _svlm("lm").prepare(aligned, Q)
    for focus in (None, Focus([], source_stamp=1)):
        out = svlm.infer(aligned, Q, focus=focus, ggvr=True, max_new_tokens=2)
        assert out.focus_stage == "none"
        assert out.encoder_patches == out.encoder_patches_full == 252 * 4
        assert out.visual_tokens_used == 252
    prepared = svlm.prepare(aligned, Q, ggvr=True)
    torch.testing.assert_close(prepared.inputs_embeds, whole.inputs_embeds)


def test_gtvr_uses_a_focused_frames_encoded_tokens(aligned: np.ndarray) -> None:
    svlm = _svlm("encoder")
    first = svlm.prepare(aligned, Q, stamp=1, focus=FOCUS, ggvr=True)
    assert first.focus_stage == "encoder"
    held = svlm._features[1]
    assert held.encoded is not None
    assert int(held.encoded.sum()) == 9 * 16
    second = svlm.prepare(aligned, Q, stamp=2, focus=FOCUS, ggvr=True, gtvr=True)
    assert second.gtvr_applied
    elsewhere = Focus([Roi("car", Box(15 * 28, 0, 21 * 28, 2 * 28))], source_stamp=1)
    third = svlm.prepare(aligned, Q, stamp=3, focus=elsewhere, gtvr=True)
    assert not third.gtvr_applied
    assert "not encoded" in "; ".join(third.notes)


def test_the_tokens_scope_encodes_what_the_lm_gets(aligned: np.ndarray) -> None:
    config = QwenSvlmConfig(
        model=str(tiny_model_dir()), focus_stage="encoder", focus_margin_tokens=0,
        encoder_scope="tokens",
    )  # fmt: skip
    prepared = QwenSvlm.load(config).prepare(aligned, Q, focus=FOCUS, ggvr=True)
    assert prepared.visual_tokens_used == 49
    assert prepared.encoder_patches == 49 * 4
    assert "encoder focus (tokens)" in "; ".join(prepared.notes)


def test_bad_focus_settings_are_refused() -> None:
    with pytest.raises(SvlmError, match="focus_stage"):
        QwenSvlmConfig(model="x", focus_stage="vision")
    with pytest.raises(SvlmError, match="focus_margin_tokens"):
        QwenSvlmConfig(model="x", focus_margin_tokens=-1)
    with pytest.raises(SvlmError, match="encoder_scope"):
        QwenSvlmConfig(model="x", encoder_scope="patches")
