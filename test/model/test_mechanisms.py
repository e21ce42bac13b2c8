"""The model's mechanisms checked against the layers' own modules, on depths that expose pairing offsets.

Every test here runs `unequal_depths_config()` (6 LLM layers, 5 expert layers, 3 coupled pairs, two cameras) and
recomputes what the forward claims to do from the Hugging Face submodules it wires together, with an eager
softmax written out here, never through the helper under test. Each docstring names the bug the test kills.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

from test.model.tiny import make_inputs, make_model, make_processor, unequal_depths_config
from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.masks import attention_mask, vla_kinds

CONFIG = unequal_depths_config()
ATOL = 1e-5  # fp32; the forward uses SDPA, the references an explicit softmax


@pytest.fixture(scope="module")
def model():
    return make_model(CONFIG)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(make_processor(CONFIG))


class Recorder:
    """Forward hooks that record calls; removed on exit."""

    def __init__(self) -> None:
        self.handles = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def pre(self, module, hook) -> None:
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def post(self, module, hook) -> None:
        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, heads * D) -> (B, heads, L, D)."""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Eager probabilities: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), mask (B, Lq, Lk) -> (B, Hq, Lq, Lk)."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # query head h reads key head h // group
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask[:, None], float("-inf"))
    return scores.softmax(dim=-1)


def test_each_coupled_pair_joins_llm_and_expert_layers_at_the_same_depth_from_the_end(model, inputs):
    """Pair j couples LLM layer L-n+j with expert layer E-n+j, and every expert layer runs exactly once.

    Kills: coupling the first n expert layers instead of the last n (the first layers then run twice, the last
    never), and pairing LLM layer L-n+j with expert layer j or E-n+j+1 (an offset the tiny preset's equal
    depths hide).
    """
    llm_layers, expert_layers = backbones.text_layers(model.vlm), backbones.expert_layers(model.expert)
    pairs: list[tuple[int, int]] = []
    expert_calls = [0] * len(expert_layers)

    def count(index):
        return lambda module, args, kwargs: expert_calls.__setitem__(index, expert_calls[index] + 1)

    def on_pair(module, args, kwargs):
        llm, expert = args[0], args[1]
        pairs.append((next(i for i, layer in enumerate(llm_layers) if layer is llm),
                      next(i for i, layer in enumerate(expert_layers) if layer is expert)))

    with Recorder() as hooks, torch.no_grad():
        for pair in model.pairs:
            hooks.pre(pair, on_pair)
        for index, layer in enumerate(expert_layers):
            hooks.pre(layer.norm1, count(index))
        model(inputs)
    assert pairs == [(3, 2), (4, 3), (5, 4)]
    assert expert_calls == [1] * 5


def test_expert_tokens_entering_the_coupled_layers_are_dinov3_after_its_uncoupled_layers(model, inputs):
    """The expert stream entering pair 0 is DINOv3's own hidden state after its first E-n layers, at the kept
    patches of each camera, cameras one after the other.

    Kills: running the wrong expert layers before the coupling (e.g. all but the first n, or E-n-1 of them), and
    gathering kept patches of the wrong camera or with the CLS/register prefix counted as a patch.
    """
    with torch.no_grad():
        out = model(inputs, output_hidden_states=True)
        reference = model.expert(inputs.expert_pixels, output_hidden_states=True).hidden_states
    depth = CONFIG.expert.num_layers - CONFIG.coupling.num_layers
    after_shallow = reference[depth][:, CONFIG.expert.num_prefix_tokens:]  # (B*C, P, C_e)
    batch, cameras, keep = out.kept_patch_index.shape
    expected = torch.stack([
        torch.cat([after_shallow[b * cameras + c, out.kept_patch_index[b, c]] for c in range(cameras)])
        for b in range(batch)])
    torch.testing.assert_close(out.expert_hidden_states[0], expected, atol=ATOL, rtol=0)


def test_saliency_equals_attention_recomputed_from_the_saliency_layers_own_q_and_k(model, inputs):
    """AGVP's map is the action rows' softmax attention on each camera's visual tokens, averaged over heads,
    action tokens and exactly the configured saliency layers, with q/k from those layers' own projections,
    q/k norms and MRoPE.

    Kills: reading the saliency layers shifted by one (index + 1 or a 1-based reading of the config), taking the
    mean over the wrong axis, and a saliency computed from another layer's q/k than the one it names.
    """
    llm_layers = backbones.text_layers(model.vlm)
    normed: dict[int, torch.Tensor] = {}
    rope: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_first(index):
        return lambda module, args, kwargs, output: normed.setdefault(index, output)

    with Recorder() as hooks, torch.no_grad():
        for index, layer in enumerate(llm_layers):
            hooks.post(layer.input_layernorm, keep_first(index))
        hooks.post(model.vlm.language_model.rotary_emb, lambda m, a, k, output: rope.append(output))
        out = model(inputs)
    horizon = CONFIG.robot.chunk_size
    mask = attention_mask(vla_kinds(inputs.prompt_valid, CONFIG.robot.use_proprio, horizon))
    cos, sin = rope[0]  # the first rotary call is the VLA sequence's
    maps = []
    for index in CONFIG.pruning.saliency_layers:
        attn, x = llm_layers[index].self_attn, normed[index]
        q = attn.q_norm(attn.q_proj(x).view(*x.shape[:2], -1, attn.head_dim)).transpose(1, 2)
        k = attn.k_norm(attn.k_proj(x).view(*x.shape[:2], -1, attn.head_dim)).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        probs = _softmax_attention(q, k, mask, attn.scaling)  # (B, Hq, N, N)
        maps.append(probs[:, :, -horizon:][..., inputs.visual_index.flatten()].mean(dim=(1, 2)))
    grid_h, grid_w = CONFIG.vlm.token_grid
    expected = torch.stack(maps).mean(0).view(inputs.batch_size, -1, grid_h, grid_w)
    torch.testing.assert_close(out.saliency, expected, atol=ATOL, rtol=0)


def test_coupled_layer_is_one_softmax_over_expert_and_llm_keys(model, inputs):
    """Every coupled pair equals an eager reference in which the expert queries and the LLM queries attend over
    the concatenated [expert; LLM] keys with ONE softmax per row under the Fig. 3c mask, then each stream takes
    its own output projection, residual and MLP.

    Kills: separate softmaxes for the expert keys and the LLM keys (summed or averaged afterwards), so the expert
    tokens no longer compete with the LLM tokens for attention mass; also a wrong o_proj or residual per stream.
    """
    calls = []
    with Recorder() as hooks, torch.no_grad():
        for pair in model.pairs:
            hooks.post(pair, lambda module, args, kwargs, output: calls.append((module, args, kwargs, output)))
        model(inputs)
    assert len(calls) == CONFIG.coupling.num_layers
    for pair, (llm, expert, z, e, vla_rope, expert_rope, mask, *positional_update), kwargs, (z_out, e_out) in calls:
        attn, dino = llm.self_attn, expert.attention
        x, e_normed = llm.input_layernorm(z), expert.norm1(e)
        q_z = attn.q_norm(attn.q_proj(x).view(*x.shape[:2], -1, attn.head_dim)).transpose(1, 2)
        k_z = attn.k_norm(attn.k_proj(x).view(*x.shape[:2], -1, attn.head_dim)).transpose(1, 2)
        v_z = _heads(attn.v_proj(x), attn.head_dim)
        q_z, k_z = apply_rotary_pos_emb(q_z, k_z, *vla_rope)
        k_e = _heads(pair.align_k(dino.k_proj(e_normed)), attn.head_dim)
        v_e = _heads(pair.align_v(dino.v_proj(e_normed)), attn.head_dim)
        update = positional_update[0] if positional_update else kwargs["update_expert"]
        queries, rows = q_z, mask[:, e.shape[1]:]  # the last pair computes no expert rows: never read
        if update:
            q_e, k_e = apply_rotary_pos_emb(_heads(pair.align_q(dino.q_proj(e_normed)), attn.head_dim), k_e,
                                            *expert_rope)
            queries, rows = torch.cat([q_e, q_z], 2), mask
        else:
            _, k_e = apply_rotary_pos_emb(k_e, k_e, *expert_rope)
        probs = _softmax_attention(queries, torch.cat([k_e, k_z], 2), rows, attn.scaling)
        values = torch.cat([v_e, v_z], 2).repeat_interleave(q_z.shape[1] // v_z.shape[1], dim=1)
        mixed = (probs @ values).transpose(1, 2).flatten(2)  # (B, rows, Hq * D)
        z_expected = z + attn.o_proj(mixed[:, -z.shape[1]:])
        z_expected = z_expected + llm.mlp(llm.post_attention_layernorm(z_expected))
        torch.testing.assert_close(z_out, z_expected, atol=ATOL, rtol=0)
        if update:
            e_expected = e + expert.layer_scale1(dino.o_proj(pair.expert_out(mixed[:, :e.shape[1]])))
            e_expected = e_expected + expert.layer_scale2(expert.mlp(expert.norm2(e_expected)))
            torch.testing.assert_close(e_out, e_expected, atol=ATOL, rtol=0)
        else:
            assert e_out is None


def test_expert_tokens_take_the_mrope_position_of_the_image_region_under_their_patch(model, inputs):
    """A kept expert patch (i, j) of camera c gets MRoPE (t_c, t_c + i*gh/Pe_h, t_c + j*gw/Pe_w), t_c being
    camera c's image start: a patch at the corner of a VLA token has exactly that token's position, whichever
    other patches were kept.

    Kills: expert positions by the kept tokens' sequence order instead of by their patch (the k-th kept token
    placed as if it were patch k), and positions taken from the wrong camera's image.
    """
    grid_h, grid_w = CONFIG.vlm.token_grid  # 2 x 2 VLA tokens per camera
    patch_h, patch_w = CONFIG.expert.patch_grid  # 8 x 8 expert patches per camera
    corners = {r * (patch_h // grid_h) * patch_w + c * (patch_w // grid_w): r * grid_w + c
               for r in range(grid_h) for c in range(grid_w)}  # expert patch -> the VLA token it starts
    extra = [[9, 63], [18, 45], [1, 2], [50, 61]]  # differ per (sample, camera), so sequence order != patch
    kept = torch.tensor([sorted([*corners, *more]) for more in extra]).view(2, 2, -1)
    positions = []
    with Recorder() as hooks, torch.no_grad():
        hooks.pre(model.vlm.language_model.rotary_emb, lambda m, args, kwargs: positions.append(args[1]))
        model(inputs, kept_patch_index=kept)
    vla, expert = positions[0], positions[1].float()  # (3, B, N) and (3, B, C * K)
    keep = kept.shape[-1]
    for b in range(2):
        for camera in range(2):
            start = vla[0, b, inputs.visual_index[camera, 0]].item()
            for slot, patch in enumerate(kept[b, camera].tolist()):
                got = expert[:, b, camera * keep + slot]
                row, col = divmod(patch, patch_w)
                expected = [start, start + row * grid_h / patch_h, start + col * grid_w / patch_w]
                assert got.tolist() == pytest.approx(expected), (b, camera, patch)
                if patch in corners:
                    token = inputs.visual_index[camera, corners[patch]]
                    assert got.tolist() == vla[:, b, token].float().tolist(), (b, camera, patch)


def _shallow_config():
    return dataclasses.replace(CONFIG, coupling=dataclasses.replace(CONFIG.coupling, llm_layers="shallow"),
                               pruning=dataclasses.replace(CONFIG.pruning, keep_ratio=1.0))


def test_shallow_coupling_joins_the_first_llm_layers_with_the_last_expert_layers_on_every_patch(inputs):
    """coupling.llm_layers=shallow (the ablation): pair j couples LLM layer j with expert layer E-n+j, every
    expert patch enters (no layer precedes for AGVP), and the coupled output differs from the deep placement's.

    Kills: the option being ignored (pairs still at the last LLM layers), the placement moving the expert side
    too (first expert layers), and a shallow model that still prunes from a saliency it cannot have.
    """
    shallow = make_model(_shallow_config())
    deep = make_model(CONFIG)  # same seed: the same weights, only the placement differs
    llm_layers, expert_layers = backbones.text_layers(shallow.vlm), backbones.expert_layers(shallow.expert)
    pairs: list[tuple[int, int]] = []

    def on_pair(module, args, kwargs):
        pairs.append((next(i for i, layer in enumerate(llm_layers) if layer is args[0]),
                      next(i for i, layer in enumerate(expert_layers) if layer is args[1])))

    with Recorder() as hooks, torch.no_grad():
        for pair in shallow.pairs:
            hooks.pre(pair, on_pair)
        out = shallow(inputs)
        deep_out = deep(inputs, keep_ratio=1.0)
    assert pairs == [(0, 2), (1, 3), (2, 4)]
    grid_h, grid_w = CONFIG.expert.patch_grid
    assert out.saliency is None
    assert out.kept_patch_index.tolist() == [[list(range(grid_h * grid_w))] * 2] * 2
    assert not torch.allclose(out.actions, deep_out.actions, atol=1e-4)


def test_shallow_coupling_config_refuses_pruning_and_ignores_the_run_time_ratio_like_the_baseline(inputs):
    """The config refuses keep_ratio < 1 with shallow coupling (nothing precedes the coupled block to prune by);
    policy_node's live keep_ratio (0.5 in sim.yaml) then has no effect, as on the baseline, instead of failing
    every chunk.

    Kills: a shallow config that claims a pruning it never does, and a run-time ratio that prunes (or crashes)
    a model without AGVP.
    """
    with pytest.raises(ConfigError, match="keep_ratio"):
        dataclasses.replace(CONFIG, coupling=dataclasses.replace(CONFIG.coupling, llm_layers="shallow"))
    model = make_model(_shallow_config())
    with torch.no_grad():
        full = model(inputs)
        model.set_keep_ratio(0.25)
        after = model(inputs, keep_ratio=0.25)
    grid_h, grid_w = CONFIG.expert.patch_grid
    assert model.kept_patches_per_camera() == grid_h * grid_w
    assert after.kept_patch_index.shape[-1] == grid_h * grid_w
    torch.testing.assert_close(after.actions, full.actions)
