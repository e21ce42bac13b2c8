"""ROCKET alignment at tiny size: layer pairs, Matryoshka widths, gradients, teacher from a DINOv3 directory."""

from __future__ import annotations

import pytest
import torch

from test.model.tiny import make_inputs, make_model, make_processor
from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.training.losses import TrainingObjective
from vla_ros.training.rocket import RocketAlignment, balanced_layers, expert_teacher, load_teacher


@pytest.fixture
def tiny_setup():
    config = DeepVisionConfig.tiny()
    model = make_model(config).train()
    return config, model, make_processor(config)


def _alignment(config, model, **kwargs) -> RocketAlignment:
    teacher, teacher_config = expert_teacher(model)
    return RocketAlignment(config, teacher, teacher_config, **kwargs)


def test_balanced_layers_end_at_the_last_layer():
    assert balanced_layers(36, 4) == (9, 18, 27, 36)
    assert balanced_layers(4, 4) == (1, 2, 3, 4)
    with pytest.raises(ConfigError, match="rocket_num_pairs"):
        balanced_layers(4, 5)


def test_matryoshka_widths_rise_from_min_width_to_the_whole_projector(tiny_setup):
    config, model, _ = tiny_setup
    alignment = _alignment(config, model, vla_layers=(4, 1, -3), teacher_layers=(4, 1, 2), min_width=0.25,
                           hidden_dim=40)
    assert [(p.vla_index, p.teacher_index, p.units) for p in alignment.pairs] == [(4, 4, 40), (1, 1, 10),
                                                                                   (2, 2, 25)]
    with pytest.raises(ConfigError, match="rocket_vla_layers"):
        _alignment(config, model, vla_layers=(5,), teacher_layers=(1,))


def test_alignment_gradient_reaches_the_projector_and_the_vla_not_the_teacher(tiny_setup):
    config, model, processor = tiny_setup
    alignment = _alignment(config, model)
    objective = TrainingObjective(model, alignment, rocket_weight=0.5)
    inputs = make_inputs(processor, batch=2)
    target = torch.zeros(2, config.robot.chunk_size, config.robot.action_dim)
    losses = objective(inputs, target, torch.ones(2, config.robot.chunk_size, dtype=torch.bool))
    assert set(losses) == {"loss", "l1", "align"}
    assert 0.0 < float(losses["align"].detach()) < 2.0  # 1 - cosine lies in [0, 2]
    torch.testing.assert_close(losses["loss"], losses["l1"] + 0.5 * losses["align"])
    losses["align"].backward()  # the alignment term alone
    projector_grad = alignment.projector.fc1.weight.grad
    assert projector_grad is not None and projector_grad.abs().sum() > 0
    first_layer = backbones.text_layers(model.vlm)[0].mlp.down_proj.weight.grad  # feeds hidden state 1
    assert first_layer is not None and first_layer.abs().sum() > 0
    assert model.vlm.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # through the visual tokens
    assert all(p.grad is None for p in alignment.teacher.parameters())
    assert model.action_head.mlp[0].weight.grad is None  # the head does not feed the aligned states


def test_hooks_are_removed_after_the_forward(tiny_setup):
    config, model, processor = tiny_setup
    alignment = _alignment(config, model)
    with alignment.capture(model) as captured:
        model(make_inputs(processor, batch=1))
    assert set(captured) == {p.vla_index for p in alignment.pairs}
    captured.clear()
    model(make_inputs(processor, batch=1))
    assert not captured


def test_teacher_copy_stays_frozen_while_the_expert_trains(tiny_setup):
    config, model, _ = tiny_setup
    alignment = _alignment(config, model)
    alignment.train()
    assert not alignment.teacher.training
    before = next(alignment.teacher.parameters()).clone()
    with torch.no_grad():
        next(model.expert.parameters()).add_(1.0)
    assert torch.equal(next(alignment.teacher.parameters()), before)


def test_teacher_from_a_dinov3_directory(tiny_setup, tmp_path):
    config, model, processor = tiny_setup
    teacher_dir = tmp_path / "dinov3"
    torch.manual_seed(5)
    backbones.build_dinov3(config.expert).save_pretrained(teacher_dir)
    teacher, teacher_config = load_teacher(str(teacher_dir), config, torch.float32)
    alignment = RocketAlignment(config, teacher, teacher_config, num_pairs=2)
    objective = TrainingObjective(model, alignment, rocket_weight=1.0)
    inputs = make_inputs(processor, batch=1)
    losses = objective(inputs, torch.zeros(1, config.robot.chunk_size, config.robot.action_dim),
                       torch.ones(1, config.robot.chunk_size, dtype=torch.bool))
    losses["loss"].backward()
    assert alignment.projector.fc2.weight.grad.abs().sum() > 0


def test_baseline_has_no_expert_to_copy():
    config = DeepVisionConfig.tiny(baseline=True)
    with pytest.raises(ConfigError, match="no expert"):
        expert_teacher(make_model(config))
