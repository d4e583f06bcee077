"""The Qwen2.5-VL SVLM on the tiny random model: visual focus inside the model, for real."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from spotvlm_ros.core.types import Box, Roi  # noqa: E402
from spotvlm_ros.svlm.prompt import CHAT_TEMPLATE, build_prompt  # noqa: E402
from spotvlm_ros.svlm.qwen import Focus, QwenSvlm, QwenSvlmConfig, SvlmError  # noqa: E402
from test.helpers.models import tiny_model_dir  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
Q = "Which objects are in the image?"


@pytest.fixture(scope="module")
def svlm() -> QwenSvlm:
    return QwenSvlm.load(QwenSvlmConfig(model=str(tiny_model_dir()), max_new_tokens=8))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    files = sorted(
        glob.glob(str(SHARED / "bdd100k_mot" / "images" / "**" / "*.jpg"), recursive=True)
    )
    if not files:
        pytest.skip(f"no BDD100K frames under {SHARED}")
    return np.array(Image.open(files[0]).convert("RGB"))


@pytest.fixture(scope="module")
def aligned() -> np.ndarray:
    """588x336 px: already a multiple of 28, so 1 original px == 1 resized px (12 x 21 tokens)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(336, 588, 3), dtype=np.uint8)


def test_the_test_model_says_it_is_one(svlm: QwenSvlm) -> None:
    assert svlm.is_test_model


def test_prepared_inputs_reproduce_the_models_own_forward(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    prepared = svlm.prepare(frame, Q)
    assert prepared.visual_tokens_full == 252  # 1280x720 at max_pixels 448*448
    pixels = svlm.image_processor(images=[Image.fromarray(frame)], return_tensors="pt")
    mm = (prepared.input_ids == svlm.image_token_id).int()
    with torch.inference_mode():
        reference = svlm.model(
            input_ids=prepared.input_ids,
            pixel_values=pixels["pixel_values"],
            image_grid_thw=pixels["image_grid_thw"],
            mm_token_type_ids=mm,
            attention_mask=torch.ones_like(prepared.input_ids),
        ).logits
    torch.testing.assert_close(svlm.prefill_logits(prepared), reference)


def test_a_7x7_token_roi_keeps_exactly_49_visual_tokens(
    svlm: QwenSvlm, aligned: np.ndarray
) -> None:
    focus = Focus([Roi("car", Box(2 * 28, 3 * 28, 9 * 28, 10 * 28))], source_stamp=0)
    prepared = svlm.prepare(aligned, Q, focus=focus, ggvr=True)
    assert prepared.ggvr_applied
    assert prepared.visual_tokens_full == 252
    assert prepared.visual_tokens_used == 49
    n_text = prepared.input_ids.shape[1] - 252
    assert prepared.inputs_embeds.shape[1] == n_text + 49


def test_whole_image_roi_gives_the_same_logits_as_no_pruning(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    full = svlm.prepare(frame, Q)
    focus = Focus([Roi("car", Box(0, 0, frame.shape[1], frame.shape[0]))], source_stamp=0)
    whole = svlm.prepare(frame, Q, focus=focus, ggvr=True)
    assert whole.visual_tokens_used == whole.visual_tokens_full
    torch.testing.assert_close(svlm.prefill_logits(whole), svlm.prefill_logits(full))


def test_kept_tokens_keep_their_full_image_positions(svlm: QwenSvlm, frame: np.ndarray) -> None:
    full = svlm.prepare(frame, Q)
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=0)
    pruned = svlm.prepare(frame, Q, focus=focus, ggvr=True)
    assert pruned.visual_tokens_used < pruned.visual_tokens_full
    assert torch.equal(pruned.position_ids, full.position_ids[:, :, pruned.kept])
    # the text after the image continues from the full image's positions, not the kept count
    assert int(pruned.position_ids[0, 0, -1]) == int(full.position_ids[0, 0, -1])


def test_pruned_generation_with_the_cache_equals_recomputing_without_it(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=0)
    pruned = svlm.prepare(frame, Q, focus=focus, ggvr=True)
    tokens, _, confidence = svlm.generate(pruned, max_new_tokens=6)
    assert 0.0 < confidence <= 1.0
    assert 1 <= len(tokens) <= 6
    # Uncached reference: append each token at the next text position and rerun everything.
    embeds, positions = pruned.inputs_embeds, pruned.position_ids
    embed = svlm.model.get_input_embeddings()
    expected = []
    with torch.inference_mode():
        for _ in range(len(tokens)):
            logits = svlm.model(
                inputs_embeds=embeds, position_ids=positions, use_cache=False
            ).logits
            token = int(logits[0, -1].argmax())
            expected.append(token)
            embeds = torch.cat([embeds, embed(torch.tensor([[token]]))], dim=1)
            positions = torch.cat([positions, positions[:, :, -1:] + 1], dim=2)
    assert tokens == expected


def test_infer_reports_tokens_and_latency(svlm: QwenSvlm, frame: np.ndarray) -> None:
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=0)
    out = svlm.infer(frame, Q, focus=focus, ggvr=True, context_text="- from the cloud model: car")
    assert out.ggvr_applied
    assert out.visual_tokens_used < out.visual_tokens_full == 252
    assert out.latency >= out.prefill_latency > 0.0
    assert 1 <= out.generated_tokens <= 8
    assert isinstance(out.answer, str)


def test_chat_history_form_runs(svlm: QwenSvlm, frame: np.ndarray) -> None:
    history = [
        {"role": "user", "content": "[2.0 s ago] " + Q},
        {"role": "assistant", "content": "car"},
    ]
    out = svlm.infer(frame, Q, history=history)
    assert out.visual_tokens_used == 252


def test_gtvr_with_alpha_zero_leaves_the_visual_tokens_unchanged(frame: np.ndarray) -> None:
    svlm = QwenSvlm.load(QwenSvlmConfig(model=str(tiny_model_dir()), gtvr_alpha=0.0))
    svlm.prepare(frame, Q, stamp=1)  # frame T-d: its features are kept
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=1)
    plain = svlm.prepare(frame, Q, stamp=2)
    gated = svlm.prepare(frame, Q, stamp=3, focus=focus, gtvr=True)
    assert gated.gtvr_applied
    torch.testing.assert_close(gated.inputs_embeds, plain.inputs_embeds)


def test_gtvr_reweights_by_similarity_to_the_roi_features(frame: np.ndarray) -> None:
    svlm = QwenSvlm.load(QwenSvlmConfig(model=str(tiny_model_dir()), gtvr_alpha=1.0))
    svlm.prepare(frame, Q, stamp=1)
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=1)
    plain = svlm.prepare(frame, Q, stamp=2)
    gated = svlm.prepare(frame, Q, stamp=3, focus=focus, gtvr=True)
    is_image = plain.input_ids[0] == svlm.image_token_id
    before = plain.inputs_embeds[0, is_image].float()
    after = gated.inputs_embeds[0, is_image].float()
    ratio = (after.norm(dim=1) / before.norm(dim=1)).numpy()
    # W_s = sigmoid(mu * s + b) lies in (0, 1) and is not the same for every token
    assert np.all(ratio > 0.0)
    assert np.all(ratio < 1.0 + 1e-6)
    assert ratio.max() - ratio.min() > 1e-3


def test_gtvr_falls_back_when_the_roi_frame_is_no_longer_held(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    focus = Focus([Roi("car", Box(300, 200, 700, 500))], source_stamp=999_999)
    out = svlm.infer(frame, Q, focus=focus, gtvr=True)
    assert not out.gtvr_applied
    assert "no longer held" in out.focus_note


def test_feature_memory_is_bounded(frame: np.ndarray) -> None:
    svlm = QwenSvlm.load(QwenSvlmConfig(model=str(tiny_model_dir()), feature_cache_frames=2))
    for stamp in range(4):
        svlm.prepare(frame, Q, stamp=stamp)
    assert svlm.held_feature_stamps() == [2, 3]


def test_roi_outside_the_image_falls_back_to_the_full_image(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    focus = Focus([Roi("car", Box(5000, 5000, 6000, 6000))], source_stamp=0)
    out = svlm.infer(frame, Q, focus=focus, ggvr=True)
    assert not out.ggvr_applied
    assert out.visual_tokens_used == out.visual_tokens_full
    assert "min_focus_tokens" in out.focus_note


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 4), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((5,), np.uint8), "HxWx3"),
        (b"\xff\xd8\xff not a decoded image", "numpy array"),
        (np.zeros((1, 400, 3), np.uint8), "aspect ratio"),
    ],
)
def test_bad_images_get_clear_errors(svlm: QwenSvlm, image: object, message: str) -> None:
    with pytest.raises(SvlmError, match=message):
        svlm.infer(image, Q)


def test_gray_image_is_accepted(svlm: QwenSvlm) -> None:
    assert svlm.infer(np.full((100, 120), 128, np.uint8), Q).visual_tokens_full > 0


def test_unreachable_hub_id_names_the_parameter() -> None:
    with pytest.raises(SvlmError, match=r"model_path.*hub"):
        QwenSvlm.load(
            QwenSvlmConfig(model="Qwen/Qwen2.5-VL-3B-Instruct-not-here", local_files_only=True)
        )


def test_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SvlmError, match=r"no config\.json"):
        QwenSvlm.load(QwenSvlmConfig(model=str(tmp_path)))


def test_bad_config_values_are_refused() -> None:
    with pytest.raises(SvlmError, match="gtvr_alpha"):
        QwenSvlmConfig(model="x", gtvr_alpha=1.5)
    with pytest.raises(SvlmError, match="min_pixels"):
        QwenSvlmConfig(model="x", min_pixels=10)


def test_the_tokenizers_chat_template_agrees_with_the_prompt_builder(svlm: QwenSvlm) -> None:
    assert svlm.tokenizer.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "car"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": Q}]},
    ]
    rendered = svlm.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert rendered == build_prompt(Q, image_tokens=1, history=messages[:2])


def test_gtvr_update_with_alpha_between_0_and_1_matches_the_hand_worked_values() -> None:
    """One prototype f = (1, 0); token v1 = (2, 0) has s = cos = 1, v2 = (0, 3) has s = 0.
    mu = 10, b = -5: W1 = sigmoid(5) = 0.9933071, W2 = sigmoid(-5) = 0.0066929.
    alpha = 0.25: t' = 0.25 W t + 0.75 t, so
    t1' = (0.25 * 0.9933071 + 0.75) * 2 = 1.9966536 and t2' = (0.25 * 0.0066929 + 0.75) * 3
    = 2.2550197."""
    import torch

    from spotvlm_ros.svlm.qwen import gtvr_update

    features = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    out = gtvr_update(features, torch.tensor([[1.0, 0.0]]), mu=10.0, b=-5.0, alpha=0.25)
    expected = torch.tensor([[1.9966536, 0.0], [0.0, 2.2550197]])
    assert torch.allclose(out, expected, atol=1e-6), out
