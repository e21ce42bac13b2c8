"""Checkpoint directories: save/load round trip, base weights from local HF directories, named failures."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from test.model.tiny import make_inputs
from vla_ros.errors import CheckpointError
from vla_ros.model import backbones
from vla_ros.model.checkpoint import (CONFIG_FILE, NORM_STATS_FILE, WEIGHTS_FILE, create_checkpoint_from_base_weights,
                                      create_random_checkpoint, load_checkpoint, placeholder_norm_stats,
                                      save_checkpoint)
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import build_byte_tokenizer


@pytest.fixture
def checkpoint_dir(tmp_path):
    config = DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True))
    return create_random_checkpoint(tmp_path / "ckpt", config, seed=3)


def test_save_then_load_gives_identical_outputs(tmp_path, checkpoint_dir):
    first = load_checkpoint(checkpoint_dir)
    inputs = make_inputs(first.processor)
    save_checkpoint(first.model, first.processor.norm_stats, first.processor.tokenizer, tmp_path / "again")
    second = load_checkpoint(tmp_path / "again")
    assert second.model.config == first.model.config
    with torch.no_grad():
        a, b = first.model(inputs), second.model(inputs)
    assert torch.equal(a.actions, b.actions)
    assert torch.equal(a.kept_patch_index, b.kept_patch_index)
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (checkpoint_dir / "tokenizer.json").read_text()


@pytest.mark.parametrize("name", [CONFIG_FILE, WEIGHTS_FILE, NORM_STATS_FILE, "tokenizer.json",
                                  "tokenizer_config.json"])
def test_missing_file_names_the_path(checkpoint_dir, name):
    (checkpoint_dir / name).unlink()
    with pytest.raises(CheckpointError, match=f"{checkpoint_dir / name} not found: expected"):
        load_checkpoint(checkpoint_dir)


def test_missing_directory_lists_the_expected_contents(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere is not a directory: .*config.json, model.safetensors"):
        load_checkpoint(tmp_path / "nowhere")


def test_unknown_config_key_is_refused(checkpoint_dir):
    data = json.loads((checkpoint_dir / CONFIG_FILE).read_text())
    data["pruning"]["keep_ratoi"] = 0.3
    (checkpoint_dir / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config.json is not a valid DeepVisionConfig: pruning.keep_ratoi"):
        load_checkpoint(checkpoint_dir)


def test_weights_of_another_architecture_are_refused(tmp_path, checkpoint_dir):
    create_random_checkpoint(tmp_path / "baseline", DeepVisionConfig.tiny(baseline=True, robot=RobotConfig(
        use_proprio=True)))
    (checkpoint_dir / WEIGHTS_FILE).write_bytes((tmp_path / "baseline" / WEIGHTS_FILE).read_bytes())
    expected = r"model.safetensors does not match .*config.json: missing \['pairs.0.align_k"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(checkpoint_dir)


def test_corrupt_weights_are_refused(checkpoint_dir):
    (checkpoint_dir / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(checkpoint_dir)


def test_tokenizer_that_does_not_fit_the_config_is_refused(checkpoint_dir):
    config = DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True))
    other = dataclasses.replace(config.vlm.tokens, image=263)
    build_byte_tokenizer(other).save_pretrained(checkpoint_dir)
    with pytest.raises(CheckpointError, match=r"tokenizer.*<\|image_pad\|> tokenizer 263 != config 261"):
        load_checkpoint(checkpoint_dir)


@pytest.fixture
def base_dirs(tmp_path):
    """Tiny Qwen3-VL and DINOv3 saved the way Hugging Face checkpoints are (save_pretrained)."""
    config = DeepVisionConfig.tiny()
    torch.manual_seed(7)
    qwen = Qwen3VLForConditionalGeneration(backbones.qwen_hf_config(config.vlm))
    qwen.save_pretrained(tmp_path / "qwen")
    build_byte_tokenizer(config.vlm.tokens).save_pretrained(tmp_path / "qwen")
    dino = backbones.build_dinov3(config.expert)
    dino.save_pretrained(tmp_path / "dino")
    config = dataclasses.replace(config, vlm=dataclasses.replace(config.vlm, base_weights_dir=str(tmp_path / "qwen")),
                                 expert=dataclasses.replace(config.expert, base_weights_dir=str(tmp_path / "dino")))
    return config, qwen, dino


def test_base_weights_load_from_local_hf_directories(base_dirs):
    config, qwen, dino = base_dirs
    model = DeepVisionVLA.from_base_weights(config)
    ours, theirs = model.vlm.state_dict(), qwen.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(torch.equal(a, b) for a, b in zip(model.expert.state_dict().values(), dino.state_dict().values()))
    assert model.expert.config.pos_embed_rescale is None  # our no-augmentation choice overrides the HF default


def test_training_start_checkpoint_carries_base_weights_and_tokenizer(base_dirs, tmp_path):
    config, qwen, _ = base_dirs
    path = create_checkpoint_from_base_weights(tmp_path / "start", config, placeholder_norm_stats(config))
    loaded = load_checkpoint(path)
    embeddings = loaded.model.vlm.language_model.embed_tokens.weight
    assert torch.equal(embeddings, qwen.model.language_model.embed_tokens.weight)
    assert (path / "tokenizer.json").read_text() == (tmp_path / "qwen" / "tokenizer.json").read_text()


def test_base_weights_that_do_not_match_the_config_are_refused(base_dirs):
    config, _, _ = base_dirs
    wider = dataclasses.replace(config.vlm, text=dataclasses.replace(config.vlm.text, intermediate_size=96))
    with pytest.raises(CheckpointError, match=r"does not match vlm.text: intermediate_size: config 96 != .* 128"):
        DeepVisionVLA.from_base_weights(dataclasses.replace(config, vlm=wider))


def test_missing_base_weight_directory_names_the_path(base_dirs, tmp_path):
    config, _, _ = base_dirs
    missing = dataclasses.replace(config, expert=dataclasses.replace(config.expert, base_weights_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'config.json'} not found: DINOv3 base weights"):
        DeepVisionVLA.from_base_weights(missing)
