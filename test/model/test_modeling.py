"""DeepVisionVLA forward: shapes, equivalence with transformers' Qwen3-VL, coupling isolation, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from test.model.tiny import make_inputs, make_model, make_processor, unequal_depths_config
from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import CouplingConfig, DeepVisionConfig, RobotConfig
from vla_ros.model.masks import vla_kinds

# fp32 on CPU; our layer loop and HF's differ only in summation order inside SDPA.
HF_ATOL = 1e-5


def _variant(**coupling: object) -> DeepVisionConfig:
    base = DeepVisionConfig.tiny()
    return dataclasses.replace(base, coupling=dataclasses.replace(base.coupling, **coupling))


VARIANTS = {
    "deepvision": DeepVisionConfig.tiny(),
    "baseline": DeepVisionConfig.tiny(baseline=True),
    "proprio_two_cameras": DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True, camera_names=("front", "wrist"))),
    "prefix_shared_fixed": _variant(keep_prefix_tokens=True, share_aligners=True, expert_positions="fixed"),
    "norm_before_no_rope_replace_o": _variant(aligner_norm_position="before", expert_positions="none",
                                              expert_output="replace_o_proj"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_output_shapes(name):
    """Shapes only (every variant runs end to end); the mechanisms are checked in test_mechanisms.py."""
    config = VARIANTS[name]
    processor = make_processor(config)
    inputs = make_inputs(processor)
    out = make_model(config)(inputs, target_actions=torch.zeros(2, 16, 7))
    cameras = len(config.robot.camera_names)
    assert out.actions.shape == (2, config.robot.chunk_size, config.robot.action_dim)
    assert torch.isfinite(out.actions).all() and out.loss.ndim == 0
    assert out.last_hidden_state.shape == (2, inputs.input_ids.shape[1] + config.robot.use_proprio + 16, 64)
    if config.expert is None:
        assert out.kept_patch_index is None and out.saliency is None
    else:
        assert out.kept_patch_index.shape == (2, cameras, 32)  # half of the 8x8 expert patches
        assert out.saliency.shape == (2, cameras, 2, 2)


def test_prompt_hidden_states_equal_transformers_qwen3vl_forward():
    """Kills: our layer loop diverging from HF's Qwen3-VL (wrong norm, MRoPE, DeepStack injection or causal mask on
    the prompt), and padding that leaks into the valid tokens."""
    config = DeepVisionConfig.tiny(baseline=True)
    processor = make_processor(config)
    model = make_model(config)
    inputs = make_inputs(processor)  # two instructions of different length: the shorter one is padded
    with torch.no_grad():
        ours = model(inputs).last_hidden_state
        patches_per_image = inputs.vla_pixels.shape[0] // 2
        for b in range(2):
            ids = inputs.input_ids[b][inputs.prompt_valid[b]][None]
            reference = model.vlm(input_ids=ids, image_grid_thw=torch.tensor([[1, 4, 4]]),
                                  pixel_values=inputs.vla_pixels[b * patches_per_image:(b + 1) * patches_per_image],
                                  mm_token_type_ids=(ids == config.vlm.tokens.image).int()).last_hidden_state
            torch.testing.assert_close(ours[b, : ids.shape[1]], reference[0], atol=HF_ATOL, rtol=0)


def test_mrope_positions_equal_transformers_get_rope_index(tiny_model, tiny_processor):
    """Kills: MRoPE ids that differ from HF's get_rope_index (image rows/columns, the jump after an image, padding
    that advances the position), and action tokens that do not continue the text positions."""
    inputs = make_inputs(tiny_processor)
    kinds = vla_kinds(inputs.prompt_valid, use_proprio=False, horizon=16)
    ours = tiny_model._vla_positions(kinds, inputs.visual_index)
    for b in range(2):
        ids = inputs.input_ids[b][inputs.prompt_valid[b]][None]
        reference, _ = tiny_model.vlm.get_rope_index(ids, (ids == 261).int(), image_grid_thw=torch.tensor([[1, 4, 4]]))
        assert torch.equal(ours[:, b, : ids.shape[1]], reference[:, 0])
        last = reference[0, 0, -1].item()  # action tokens continue the text positions
        assert ours[0, b, -16:].tolist() == list(range(last + 1, last + 17))


@pytest.mark.parametrize("config", [DeepVisionConfig.tiny(), unequal_depths_config()], ids=["tiny", "unequal_depths"])
def test_perturbing_vla_tokens_leaves_expert_states_unchanged(config):
    """Kills: a coupled-layer mask that lets expert tokens attend to VLA tokens (Fig. 3c: expert rows see only
    expert columns), so text or VLA pixels would leak into the expert stream."""
    tiny_model, tiny_processor = make_model(config), make_processor(config)
    inputs = make_inputs(tiny_processor)
    input_ids, valid = tiny_processor.encode_text(["wave at the camera", "stop"])
    generator = torch.Generator().manual_seed(5)
    perturbed = dataclasses.replace(inputs, input_ids=input_ids, prompt_valid=valid,
                                    vla_pixels=inputs.vla_pixels + torch.randn(inputs.vla_pixels.shape,
                                                                               generator=generator))
    with torch.no_grad():  # keep_ratio 1: every patch kept, so the selection cannot differ
        before = tiny_model(inputs, keep_ratio=1.0, output_hidden_states=True)
        after = tiny_model(perturbed, keep_ratio=1.0, output_hidden_states=True)
    assert len(before.expert_hidden_states) == config.coupling.num_layers
    for old, new in zip(before.expert_hidden_states, after.expert_hidden_states):
        torch.testing.assert_close(new, old, atol=0, rtol=0)
    assert (after.actions - before.actions).abs().max() > 1e-4  # the VLA side did change


@pytest.mark.parametrize("config", [DeepVisionConfig.tiny(), unequal_depths_config()], ids=["tiny", "unequal_depths"])
def test_kept_expert_token_changes_actions_and_pruned_one_does_not(config):
    """Kills: pruned expert tokens that still reach the coupled layers (selection ignored), kept ones that do not,
    a saliency that reads the expert stream, and expert tokens of one sample reaching another sample."""
    tiny_model, tiny_processor = make_model(config), make_processor(config)
    inputs = make_inputs(tiny_processor)
    expert_cfg = config.expert
    last_shallow = backbones.expert_layers(tiny_model.expert)[expert_cfg.num_layers - config.coupling.num_layers - 1]
    prefix = expert_cfg.num_prefix_tokens

    direction = torch.randn(tiny_model.config.expert.hidden_size, generator=torch.Generator().manual_seed(2))

    def run_with_bump(patch: int | None) -> torch.Tensor:
        def bump(module, args, output):
            output = output.clone()
            output[0, prefix + patch] += 3.0 * direction  # sample 0 only; not constant, LayerNorm would undo it
            return output
        handle = last_shallow.register_forward_hook(bump) if patch is not None else None
        try:
            with torch.no_grad():
                return tiny_model(inputs)
        finally:
            if handle is not None:
                handle.remove()

    clean = run_with_bump(None)
    kept = clean.kept_patch_index[0, 0].tolist()
    pruned = sorted(set(range(expert_cfg.patch_grid[0] * expert_cfg.patch_grid[1])) - set(kept))
    with_pruned = run_with_bump(pruned[0])
    with_kept = run_with_bump(kept[0])
    assert torch.equal(with_pruned.kept_patch_index, clean.kept_patch_index)  # saliency ignores the expert
    torch.testing.assert_close(with_pruned.actions, clean.actions, atol=0, rtol=0)
    assert (with_kept.actions[0] - clean.actions[0]).abs().max() > 1e-4
    torch.testing.assert_close(with_kept.actions[1], clean.actions[1], atol=0, rtol=0)


def test_few_optimizer_steps_overfit_a_tiny_batch(tiny_model, tiny_processor):
    """Kills: a forward that cannot learn (detached head or coupled stream, a loss on the wrong tokens)."""
    tiny_model.train()
    inputs = make_inputs(tiny_processor)
    generator = torch.Generator().manual_seed(3)
    start, end = torch.rand(2, 2, 1, 7, generator=generator) - 0.5
    target = start + (end - start) * torch.linspace(0, 1, 16)[None, :, None]  # smooth chunks (B, H, A)
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):
        loss = tiny_model(inputs, target_actions=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= losses[0] / 10, f"L1 {losses[0]:.4f} -> {losses[-1]:.4f}, expected a tenfold fall"


def test_l1_gradient_reaches_aligners_expert_and_head(tiny_model, tiny_processor):
    """Kills: aligners, expert or head cut off from the loss (a stray no_grad or detach), and a last pair that
    builds an expert update nobody reads."""
    tiny_model.train()
    tiny_model(make_inputs(tiny_processor), target_actions=torch.ones(2, 16, 7)).loss.backward()
    pair0, pair1 = tiny_model.pairs
    for name, param in [("pair0.align_q", pair0.align_q.proj.weight), ("pair0.expert_out", pair0.expert_out.weight),
                        ("pair1.align_k", pair1.align_k.proj.weight), ("pair1.align_v", pair1.align_v.proj.weight),
                        ("expert.embeddings", tiny_model.expert.embeddings.patch_embeddings.weight),
                        ("head", tiny_model.action_head.mlp[0].weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert pair1.align_q is None and pair1.expert_out is None  # the last pair's expert output is never read


def test_keep_ratio_changes_at_run_time(tiny_model, tiny_processor):
    """Kills: a keep ratio read once at construction, so set_keep_ratio or the per-call value is ignored."""
    inputs = make_inputs(tiny_processor)
    with torch.no_grad():
        assert tiny_model(inputs, keep_ratio=0.25).kept_patch_index.shape[-1] == 16
        tiny_model.set_keep_ratio(0.75)
        assert tiny_model(inputs).kept_patch_index.shape[-1] == 48
    with pytest.raises(ConfigError, match="keep_ratio"):
        tiny_model.set_keep_ratio(0.0)


def test_shapes_are_static_within_an_instruction_bucket(tiny_processor):
    short_ids, _ = tiny_processor.encode_text(["go"])
    long_ids, _ = tiny_processor.encode_text(["put the green block in the box"])
    assert short_ids.shape == long_ids.shape == (1, tiny_processor.fixed_prompt_tokens + 32)


def test_coupling_config_rejects_pairing_the_baseline_with_coupled_layers():
    with pytest.raises(ConfigError, match="coupling.num_layers"):
        dataclasses.replace(DeepVisionConfig.tiny(baseline=True), coupling=CouplingConfig(num_layers=2))
