"""AGVP: action-guided visual pruning of the expert's patch tokens (DV §3.3.3, Fig. 3b).

Attention is recomputed only for the H action-query rows (B, Hq, H, N) rather than the full (B, Hq, N, N)
map; test_pruning checks it against the full map written out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from vla_ros.model.configuration import DeepVisionConfig


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


def kept_patches_per_camera(config: DeepVisionConfig, keep_ratio: float) -> int:
    """Expert patches entering the coupled layers per camera: none without an expert, every one without AGVP
    (shallow coupling), else K for the ratio. The torch and ONNX Runtime policies both count with this."""
    if config.expert is None:
        return 0
    patches = config.expert.patch_grid[0] * config.expert.patch_grid[1]
    return kept_patch_count(keep_ratio, patches) if config.uses_agvp else patches


def select_expert_patches(saliency: torch.Tensor, patch_grid: tuple[int, int], keep: int,
                          interpolation: str = "bilinear") -> torch.Tensor:
    """Top-K expert patches per camera from the VLA-grid saliency.

    saliency: (B, C, gh, gw) -> indices (B, C, K) into the raster-ordered expert patches, sorted ascending so
    the kept tokens stay in raster order. Detached: AGVP selects tokens, it receives no gradient (DV Fig. 3b).
    """
    batch, num_cameras, grid_h, grid_w = saliency.shape
    maps = saliency.detach().float().reshape(batch * num_cameras, grid_h, grid_w)
    rows = _resize_matrix(grid_h, patch_grid[0], interpolation, maps.device)  # (Pe_h, gh)
    cols = _resize_matrix(grid_w, patch_grid[1], interpolation, maps.device)  # (Pe_w, gw)
    maps = rows @ maps @ cols.T  # (B*C, Pe_h, Pe_w): F.interpolate's values, see _resize_matrix
    return _top_k_lower_index_first(maps.flatten(1), keep).view(batch, num_cameras, keep)


def _resize_matrix(size_in: int, size_out: int, mode: str, device: torch.device) -> torch.Tensor:
    """F.interpolate along one axis as a (size_out, size_in) matrix: the resize of each one-hot row.

    Resizing as two matrix products gives the patches that copy the same VLA tokens (the clamped border rows of
    bilinear) identical weight rows, hence bit-identical saliency: an exact tie that the rank below settles the
    same way everywhere. F.interpolate itself summed 0.875 s + 0.125 s on one row and 0.625 s + 0.375 s on the
    next, one ulp apart, and ONNX Runtime's Resize rounded them differently, so the two kept other patches.
    """
    one_hot = torch.eye(size_in, device=device)[:, None, :, None]  # image b: row b lit, width 1
    options = {} if mode == "nearest" else {"align_corners": False}
    resized = F.interpolate(one_hot, size=(size_out, 1), mode=mode, **options)  # (in, 1, out, 1)
    return resized[:, 0, :, 0].T


def _top_k_lower_index_first(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """(n, P) -> (n, K) ascending indices of the K largest scores; of equal scores the lower index wins.

    Upsampling a coarse map makes exact ties (the patches under one VLA token near the border), and topk's
    order among ties is the kernel's: torch CPU, CUDA and ONNX Runtime kept different patches. Ranking every
    patch against every other (P^2 compares: 1M at paper size) makes the choice exact, and topk then only sees
    distinct ranks. (A stable sort would do the same but does not export to ONNX.)
    """
    index = torch.arange(scores.shape[-1], device=scores.device)
    higher, lower = scores[:, None, :], scores[:, :, None]  # [n, i, j]: does patch j rank before patch i?
    ahead = (higher > lower) | ((higher == lower) & (index[None, None, :] < index[None, :, None]))
    rank = ahead.sum(dim=-1)  # (n, P): a permutation of 0 .. P-1
    return rank.topk(keep, dim=-1, largest=False, sorted=False).indices.sort(dim=-1).values
