"""The SVLM loads a folder laid out as the published Qwen2.5-VL-3B-Instruct (sharded
safetensors under transformers 4.x names, the published config, processor, template and
generation files; test/helpers/published.py) and takes from it what the folder says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spotvlm_ros.svlm.prompt import build_prompt
from spotvlm_ros.svlm.qwen import QwenSvlm, QwenSvlmConfig, SvlmError, check_transformers
from test.helpers.models import published_model_dir
from test.helpers.published import (
    PUBLISHED_3B_CONFIG,
    PUBLISHED_FILES,
    PUBLISHED_PREPROCESSOR_CONFIG,
    published_name,
)

Q = "Which objects are in the image?"


@pytest.fixture(scope="module")
def folder() -> Path:
    return published_model_dir()


@pytest.fixture(scope="module")
def svlm(folder: Path) -> QwenSvlm:
    return QwenSvlm.load(QwenSvlmConfig(model=str(folder), max_new_tokens=6))


@pytest.fixture
def frame() -> np.ndarray:
    return (np.random.default_rng(1).random((224, 336, 3)) * 255).astype(np.uint8)


def variant(folder: Path, tmp_path: Path, **files: object) -> Path:
    """A copy of ``folder`` (weights linked) with ``files`` replaced (None removes one)."""
    out = tmp_path / "variant"
    out.mkdir()
    for item in folder.iterdir():
        if item.suffix == ".safetensors":
            (out / item.name).symlink_to(item)
        else:
            shutil.copyfile(item, out / item.name)
    for name, content in files.items():
        path = out / name.replace("__", ".")
        if content is None:
            path.unlink()
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    return out


def test_every_weight_comes_from_the_sharded_checkpoint_under_its_published_name(
    folder: Path, svlm: QwenSvlm
) -> None:
    from safetensors import safe_open

    assert sorted(p.name for p in folder.iterdir()) == sorted(PUBLISHED_FILES)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert not any(
        k.startswith(("model.language_model.", "model.visual.")) for k in index["weight_map"]
    )
    params = dict(svlm.model.named_parameters())
    checked = 0
    for name in (
        "model.embed_tokens.weight",
        "model.layers.1.mlp.up_proj.weight",
        "visual.blocks.3.attn.qkv.weight",
        "visual.merger.mlp.2.weight",
    ):
        with safe_open(folder / index["weight_map"][name], "pt") as shard:
            stored = shard.get_tensor(name).float()
        current = {"model.": "model.language_model.", "visual.": "model.visual."}
        prefix = next(p for p in current if name.startswith(p))
        loaded = params[current[prefix] + name.removeprefix(prefix)]
        assert torch.equal(loaded.detach(), stored), name
        checked += 1
    assert checked == 4
    # tied: the output layer is the embedding, as the published config says
    assert (
        svlm.model.lm_head.weight.data_ptr() == svlm.model.get_input_embeddings().weight.data_ptr()
    )


def test_a_checkpoint_with_a_weight_missing_is_refused(folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    out = variant(folder, tmp_path)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.norm.weight"]
    tensors = load_file(str(folder / shard))
    del tensors["model.norm.weight"]
    (out / shard).unlink()
    save_file(tensors, str(out / shard), metadata={"format": "pt"})
    del index["weight_map"]["model.norm.weight"]
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SvlmError, match=r"1 weight\(s\) of Qwen2.5-VL missing.*norm"):
        QwenSvlm.load(QwenSvlmConfig(model=str(out)))


def test_the_image_processor_is_the_folders_capped_by_the_real_time_budget(
    folder: Path, svlm: QwenSvlm, tmp_path: Path
) -> None:
    published = PUBLISHED_PREPROCESSOR_CONFIG
    assert svlm.image_processor.size == {
        "shortest_edge": published["min_pixels"],
        "longest_edge": 448 * 448,
    }
    assert list(svlm.image_processor.image_mean) == published["image_mean"]
    assert any("capped by max_pixels 200704" in n for n in svlm.notes), svlm.notes
    # max_pixels 0: the folder's own limit; a cap above the folder's never raises it
    for cap in (0, 10**8):
        own = QwenSvlm.load(QwenSvlmConfig(model=str(folder), max_pixels=cap))
        assert own.image_processor.size["longest_edge"] == published["max_pixels"]
    # another folder's settings are read, not assumed
    other = variant(
        folder,
        tmp_path,
        preprocessor_config__json={
            **published,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "min_pixels": 112 * 112,
            "max_pixels": 224 * 224,
        },
    )
    loaded = QwenSvlm.load(QwenSvlmConfig(model=str(other)))
    assert list(loaded.image_processor.image_mean) == [0.5, 0.5, 0.5]
    assert loaded.image_processor.size == {"shortest_edge": 112 * 112, "longest_edge": 224 * 224}
    grid = loaded.prepare(np.zeros((900, 1600, 3), np.uint8), Q).grid
    assert grid.size * 28 * 28 <= 224 * 224


def test_a_processor_with_another_patch_size_than_the_encoder_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    other = variant(
        folder,
        tmp_path,
        preprocessor_config__json={**PUBLISHED_PREPROCESSOR_CONFIG, "patch_size": 16},
    )
    with pytest.raises(SvlmError, match=r"patch 16.*patch 14.*mixes files"):
        QwenSvlm.load(QwenSvlmConfig(model=str(other)))


def test_the_published_template_renders_the_prompt_the_builder_does(
    svlm: QwenSvlm, frame: np.ndarray
) -> None:
    assert svlm.use_chat_template
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "car"}]
    prepared = svlm.prepare(frame, Q, context_text="Earlier: car", history=history)
    n = prepared.visual_tokens_full
    expected = build_prompt(Q, image_tokens=n, context_text="Earlier: car", history=history)
    assert svlm.tokenizer.decode(prepared.input_ids[0]) == expected


def test_a_folders_own_chat_template_is_the_one_used(
    folder: Path, tmp_path: Path, frame: np.ndarray
) -> None:
    template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
    custom = template.replace("{{ content['text'] }}", "Dashcam. {{ content['text'] }}")
    other = variant(folder, tmp_path, chat_template__json={"chat_template": custom})
    (other / "tokenizer_config.json").write_text(
        json.dumps(
            {**json.loads((folder / "tokenizer_config.json").read_text()), "chat_template": custom}
        )
    )
    loaded = QwenSvlm.load(QwenSvlmConfig(model=str(other)))
    prompt = loaded.tokenizer.decode(loaded.prepare(frame, Q).input_ids[0])
    assert f"<|vision_end|>Dashcam. {Q}<|im_end|>" in prompt


def test_a_template_that_places_no_image_is_refused_at_load(folder: Path, tmp_path: Path) -> None:
    text_only = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    other = variant(folder, tmp_path, chat_template__json={"chat_template": text_only})
    (other / "tokenizer_config.json").write_text(
        json.dumps(
            {
                **json.loads((folder / "tokenizer_config.json").read_text()),
                "chat_template": text_only,
            }
        )
    )
    refused = r"chat template cannot be used.*not a Qwen2\.5-VL template"
    with pytest.raises(SvlmError, match=refused):
        QwenSvlm.load(QwenSvlmConfig(model=str(other)))


def test_generation_config_sampling_does_not_change_the_greedy_answer_its_eos_ids_do_end_it(
    folder: Path, tmp_path: Path, frame: np.ndarray, svlm: QwenSvlm
) -> None:
    assert any("generation_config.json asks for" in n and "not used" in n for n in svlm.notes)
    baseline = svlm.infer(frame, Q)
    wild = variant(
        tmp_path=tmp_path,
        folder=folder,
        generation_config__json={
            "do_sample": True,
            "temperature": 5.0,
            "top_k": 50,
            "top_p": 1.0,
            "repetition_penalty": 3.0,
            "eos_token_id": [151645, 151643],
        },
    )
    assert (
        QwenSvlm.load(QwenSvlmConfig(model=str(wild), max_new_tokens=6)).infer(frame, Q).answer
        == baseline.answer
    )
    # the folder's end-of-answer ids are the model's: a first token listed there ends it
    first = svlm.generate(svlm.prepare(frame, Q))[0][0]
    (wild / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, first]}))
    ended = QwenSvlm.load(QwenSvlmConfig(model=str(wild), max_new_tokens=6)).infer(frame, Q)
    assert ended.generated_tokens == 1 and baseline.generated_tokens > 1


def test_an_older_transformers_is_refused_naming_the_version_needed() -> None:
    check_transformers("5.23.0")
    with pytest.raises(
        SvlmError, match=r"transformers 4\.49\.0 is installed.*needs transformers >= 5\.0"
    ):
        check_transformers("4.49.0")


def test_the_real_3b_config_has_every_shape_and_key_the_code_touches_at_full_size() -> None:
    """The published 3B config built on the meta device (no memory): what prepare(),
    visual focus and the decoder read exists, with the sizes the 3B checkpoint holds."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**PUBLISHED_3B_CONFIG)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    assert 3.7e9 < n < 3.8e9, n  # 3.75 B with the tied embedding counted once
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.patch_size, vision.spatial_merge_size, vision.out_hidden_size) == (14, 2, 2048)
    assert model.config.image_token_id == 151655
    assert model.get_input_embeddings().weight.shape == (151936, 2048)
    assert model.model.visual.patch_embed.proj.weight.shape == (1280, 3, 2, 14, 14)
    assert model.model.visual.merger.mlp[2].weight.shape == (2048, 5120)  # 4 x 1280 -> LM width
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    head = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) * 2 == head == 128
    for method in ("get_rope_index", "get_image_features"):
        assert callable(getattr(model.model, method))
    # every weight of the full model has a published name, and only the tied head has none
    names = [published_name(k) for k in model.state_dict()]
    assert [k for k, p in zip(model.state_dict(), names, strict=True) if p is None] == [
        "lm_head.weight"
    ]
    assert len({p for p in names if p}) == len(names) - 1
