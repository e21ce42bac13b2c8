"""AGVP: planted saliency peaks are kept in raster order; the action-row saliency equals full attention written out.

The model-level check (saliency against the saliency layers' own q/k) is in test_mechanisms.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test.model.tiny import make_inputs
from vla_ros.model.masks import attention_mask, vla_kinds
from vla_ros.model.pruning import action_to_vision_saliency, kept_patch_count, select_expert_patches


def test_keeps_exactly_the_planted_top_tokens_in_raster_order():
    """Kills: top-K in score order instead of raster order, and an off-by-one K."""
    generator = torch.Generator().manual_seed(0)
    saliency = torch.rand(1, 1, 8, 8, generator=generator) * 0.1  # same grid as the expert: no interpolation
    planted = [50, 3, 17, 42, 8, 61, 30, 26]
    saliency.view(-1)[planted] = 1.0 + torch.rand(len(planted), generator=generator)
    kept = select_expert_patches(saliency, (8, 8), keep=len(planted))
    assert kept.shape == (1, 1, 8)
    assert kept[0, 0].tolist() == sorted(planted)


def test_one_salient_vla_token_keeps_its_expert_quadrant():
    """Kills: a VLA-grid to expert-grid resize that transposes rows and columns or shifts the map."""
    # 2x2 VLA grid -> 8x8 expert grid (bilinear): the top 16 patches are the 4x4 block under the hot token.
    saliency = torch.zeros(2, 1, 2, 2)
    saliency[0, 0, 0, 0] = 1.0  # top-left token of sample 0
    saliency[1, 0, 1, 1] = 1.0  # bottom-right token of sample 1
    kept = select_expert_patches(saliency, (8, 8), keep=16)
    top_left = [r * 8 + c for r in range(4) for c in range(4)]
    bottom_right = [r * 8 + c for r in range(4, 8) for c in range(4, 8)]
    assert kept[0, 0].tolist() == top_left
    assert kept[1, 0].tolist() == bottom_right


def test_selection_is_per_camera():
    """Kills: one selection shared by all cameras, or cameras swapped."""
    saliency = torch.zeros(1, 2, 2, 2)
    saliency[0, 0, 0, 1] = 1.0
    saliency[0, 1, 1, 0] = 1.0
    kept = select_expert_patches(saliency, (2, 2), keep=1)
    assert kept.tolist() == [[[1], [2]]]


def _saliency_written_out(q, k, mask, visual_index, horizon, scale, renormalize):
    """Per sample and query head: the full softmax over every row, then action rows x visual columns."""
    batch, q_heads = q.shape[:2]
    group = q_heads // k.shape[1]
    saliency = torch.zeros(batch, *visual_index.shape)
    for b in range(batch):
        for head in range(q_heads):
            scores = (q[b, head] @ k[b, head // group].T * scale).masked_fill(~mask[b], float("-inf"))
            saliency[b] += scores.softmax(dim=-1)[-horizon:, visual_index].mean(dim=0) / q_heads
    if renormalize:
        saliency = saliency / saliency.sum(dim=-1, keepdim=True)
    return saliency


@pytest.mark.parametrize("renormalize", [False, True])
def test_action_row_saliency_equals_full_attention_written_out(renormalize):
    """Kills: a grouped-query head mapping other than HF's repeat_kv (query head h reads key head h // group),
    padding keys left unmasked, the softmax taken over the action rows only instead of over all keys, and the
    mean taken over the wrong axes."""
    generator = torch.Generator().manual_seed(1)
    batch, q_heads, kv_heads, length, head_dim, horizon = 2, 4, 2, 12, 8, 3
    valid = torch.ones(batch, length - horizon, dtype=torch.bool)
    valid[1, -2:] = False  # padding in the second sample
    mask = attention_mask(vla_kinds(valid, use_proprio=False, horizon=horizon))
    q = torch.randn(batch, q_heads, length, head_dim, generator=generator)
    k = torch.randn(batch, kv_heads, length, head_dim, generator=generator)
    visual_index = torch.tensor([[1, 2], [4, 5]])  # two cameras of two tokens
    fast = action_to_vision_saliency(q[:, :, -horizon:], k, mask[:, -horizon:], visual_index, head_dim**-0.5,
                                     renormalize)
    reference = _saliency_written_out(q, k, mask, visual_index, horizon, head_dim**-0.5, renormalize)
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


def test_kept_count_is_rounded_ratio_of_patches():
    assert kept_patch_count(0.5, 1024) == 512
    assert kept_patch_count(0.3, 64) == 19
    assert kept_patch_count(1e-4, 64) == 1
    assert kept_patch_count(1.0, 64) == 64


def test_model_keeps_the_most_salient_expert_patches_sorted_and_detached(tiny_model, tiny_processor):
    """Every kept expert patch is at least as salient as every pruned one once the VLA-grid map is resized to
    the expert grid, the indices ascend (raster order) and the map carries no gradient.

    Kills: keeping the least salient patches (topk of the negated map or a reversed sort), a selection read from
    another camera or sample, and a saliency that drags gradient into the shallow layers.
    """
    tiny_model.train()
    out = tiny_model(make_inputs(tiny_processor), target_actions=torch.zeros(2, 16, 7))
    assert not out.saliency.requires_grad
    kept = out.kept_patch_index  # (B, C, K)
    assert kept.shape == (2, 1, 32) and torch.all(kept[..., 1:] > kept[..., :-1])
    upsampled = F.interpolate(out.saliency.flatten(0, 1)[:, None], size=(8, 8), mode="bilinear",
                              align_corners=False).flatten(1)  # (B*C, 64)
    for row, index in zip(upsampled, kept.flatten(0, 1)):
        pruned = torch.ones(64, dtype=torch.bool)
        pruned[index] = False
        assert row[index].min() >= row[pruned].max()
