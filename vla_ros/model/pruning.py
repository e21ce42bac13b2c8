"""AGVP: action-guided visual pruning of the expert's patch tokens (DV §3.3.3, Fig. 3b).

Attention is recomputed only for the H action-query rows (B, Hq, H, N) rather than the full (B, Hq, N, N)
map; test_pruning checks it against the full map written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def action_to_vision_saliency(q_action: torch.Tensor, k: torch.Tensor, action_key_mask: torch.Tensor,
                              visual_index: torch.Tensor, scale: float, renormalize: bool = False) -> torch.Tensor:
    """One layer's action-to-vision attention, averaged over heads and action tokens.

    q_action: (B, Hq, H, D) RoPE'd, normed queries of the action rows; k: (B, Hkv, N, D) RoPE'd, normed keys;
    action_key_mask: (B, H, N) bool, the action rows of the layer's mask; visual_index: (C, Nv) sequence
    positions of each camera's visual tokens. Returns (B, C, Nv) float32.
    """
    batch, num_q_heads, horizon, head_dim = q_action.shape
    num_kv_heads = k.shape[1]
    # Grouped-query attention without repeat_kv: (B, Hkv, G, H, D) @ (B, Hkv, 1, D, N) -> (B, Hkv, G, H, N)
    q_grouped = q_action.float().view(batch, num_kv_heads, num_q_heads // num_kv_heads, horizon, head_dim)
    scores = q_grouped @ k.float().transpose(-1, -2).unsqueeze(2) * scale
    scores = scores.masked_fill(~action_key_mask[:, None, None], float("-inf"))
    probs = scores.softmax(dim=-1).flatten(1, 2)  # (B, Hq, H, N)
    return _visual_mass(probs, visual_index, renormalize)


def _visual_mass(probs: torch.Tensor, visual_index: torch.Tensor, renormalize: bool) -> torch.Tensor:
    num_cameras, tokens_per_camera = visual_index.shape
    visual = probs[..., visual_index.flatten()]  # (B, Hq, H, C * Nv)
    saliency = visual.mean(dim=(1, 2)).view(-1, num_cameras, tokens_per_camera)  # (B, C, Nv)
    if renormalize:
        saliency = saliency / saliency.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return saliency


def kept_patch_count(keep_ratio: float, num_patches: int) -> int:
    """K = round(ratio * P), at least one patch."""
    return max(1, min(num_patches, round(keep_ratio * num_patches)))


def select_expert_patches(saliency: torch.Tensor, patch_grid: tuple[int, int], keep: int,
                          interpolation: str = "bilinear") -> torch.Tensor:
    """Top-K expert patches per camera from the VLA-grid saliency.

    saliency: (B, C, gh, gw) -> indices (B, C, K) into the raster-ordered expert patches, sorted ascending so
    the kept tokens stay in raster order. Detached: AGVP selects tokens, it receives no gradient (DV Fig. 3b).
    """
    batch, num_cameras, grid_h, grid_w = saliency.shape
    maps = saliency.detach().float().reshape(batch * num_cameras, 1, grid_h, grid_w)
    options = {} if interpolation == "nearest" else {"align_corners": False}
    maps = F.interpolate(maps, size=patch_grid, mode=interpolation, **options)  # (B*C, 1, Pe_h, Pe_w)
    top = maps.flatten(1).topk(keep, dim=-1, sorted=False).indices
    return top.sort(dim=-1).values.view(batch, num_cameras, keep)
