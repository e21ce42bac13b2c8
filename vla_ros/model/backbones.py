"""The one place that knows Hugging Face classes, config keys and attribute paths (they moved 4.57 -> 5.x).

Everything else in model/ goes through the accessors below, so a transformers upgrade is a one-file fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoTokenizer, DINOv3ViTConfig, DINOv3ViTModel, PreTrainedTokenizerBase, Qwen3VLConfig,
                          Qwen3VLModel)
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb, apply_rotary_pos_emb_vision, repeat_kv
from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

from vla_ros.errors import CheckpointError
from vla_ros.model.configuration import ExpertConfig, QwenTextConfig, QwenVisionConfig, VLMConfig

__all__ = ["VisionGrid", "apply_rotary_pos_emb", "build_dinov3", "build_qwen_vl", "dinov3_shallow_forward",
           "expert_layers", "load_dinov3", "load_qwen_vl", "load_qwen_tokenizer", "project_vla_qkv",
           "qwen_vision_forward", "qwen_vision_grid", "repeat_kv_heads", "text_layers"]


def qwen_hf_config(cfg: VLMConfig) -> Qwen3VLConfig:
    t, v, tok = cfg.text, cfg.vision, cfg.tokens
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim,
            intermediate_size=t.intermediate_size, rms_norm_eps=t.rms_norm_eps, hidden_act=t.hidden_act,
            max_position_embeddings=t.max_position_embeddings, pad_token_id=tok.pad,
            rope_parameters=dict(rope_type="default", rope_theta=t.rope_theta,
                                 mrope_section=list(t.mrope_section), mrope_interleaved=True),
        ),
        vision_config=dict(
            depth=v.depth, hidden_size=v.hidden_size, num_heads=v.num_heads, intermediate_size=v.intermediate_size,
            patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
            spatial_merge_size=v.spatial_merge_size, out_hidden_size=t.hidden_size,
            num_position_embeddings=v.num_position_embeddings, hidden_act=v.hidden_act,
            deepstack_visual_indexes=list(v.deepstack_visual_indexes),
        ),
        image_token_id=tok.image, video_token_id=tok.video,
        vision_start_token_id=tok.vision_start, vision_end_token_id=tok.vision_end,
        attn_implementation="sdpa",
    )


def dinov3_hf_config(cfg: ExpertConfig) -> DINOv3ViTConfig:
    return DINOv3ViTConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, patch_size=cfg.patch_size, image_size=cfg.image_size_px[0],
        num_register_tokens=cfg.num_register_tokens, use_gated_mlp=cfg.use_gated_mlp, hidden_act=cfg.hidden_act,
        layerscale_value=cfg.layerscale_value, layer_norm_eps=cfg.layer_norm_eps, rope_theta=cfg.rope_theta,
        attn_implementation="sdpa", **_rope_augmentation(cfg),
    )


def _rope_augmentation(cfg: ExpertConfig) -> dict[str, float | None]:
    if cfg.use_rope_augmentation:
        return dict(pos_embed_shift=None, pos_embed_jitter=None, pos_embed_rescale=2.0)  # HF defaults
    return dict(pos_embed_shift=None, pos_embed_jitter=None, pos_embed_rescale=None)


def build_qwen_vl(cfg: VLMConfig) -> Qwen3VLModel:
    """Randomly initialised Qwen3-VL (vision tower + LLM, no lm_head: we never decode text)."""
    return Qwen3VLModel(qwen_hf_config(cfg))


def build_dinov3(cfg: ExpertConfig) -> DINOv3ViTModel:
    return DINOv3ViTModel(dinov3_hf_config(cfg))


def _check_hf_dir(path: str, what: str) -> Path:
    root = Path(path)
    if not (root / "config.json").is_file():
        raise CheckpointError(f"{root / 'config.json'} not found: {what} base weights must be a local Hugging Face "
                              "directory with config.json and *.safetensors")
    if not any(root.glob("*.safetensors")):
        raise CheckpointError(f"{root} has no *.safetensors: {what} base weights must be a local Hugging Face "
                              "directory saved with save_pretrained")
    return root


def _check_same(path: Path, ours: object, theirs: object, section: str) -> None:
    diffs = [f"{f.name}: config {getattr(ours, f.name)!r} != {path} {getattr(theirs, f.name)!r}"
             for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
    if diffs:
        raise CheckpointError(f"{path / 'config.json'} does not match {section}: " + "; ".join(diffs))


def load_qwen_vl(cfg: VLMConfig, dtype: torch.dtype) -> Qwen3VLModel:
    """Qwen3-VL weights from cfg.base_weights_dir (from_pretrained on a local path), checked against cfg."""
    root = _check_hf_dir(str(cfg.base_weights_dir), "Qwen3-VL")
    model = Qwen3VLModel.from_pretrained(root, dtype=dtype, attn_implementation="sdpa")
    hf = model.config
    _check_same(root, cfg.text, text_config_from_hf(hf), "vlm.text")
    _check_same(root, cfg.vision, vision_config_from_hf(hf), "vlm.vision")
    return model


def load_qwen_tokenizer(cfg: VLMConfig) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside the Qwen3-VL base weights (tokenizer.json and tokenizer_config.json)."""
    root = Path(str(cfg.base_weights_dir))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (root / name).is_file():
            raise CheckpointError(f"{root / name} not found: the Qwen3-VL directory must hold its tokenizer files")
    return AutoTokenizer.from_pretrained(root)


def load_dinov3(cfg: ExpertConfig, dtype: torch.dtype) -> DINOv3ViTModel:
    root = _check_hf_dir(str(cfg.base_weights_dir), "DINOv3")
    model = DINOv3ViTModel.from_pretrained(root, dtype=dtype, attn_implementation="sdpa")
    theirs = expert_config_from_hf(model.config, cfg)
    _check_same(root, cfg, theirs, "expert")
    for key, value in _rope_augmentation(cfg).items():  # our choice wins over the pretraining default
        setattr(model.config, key, value)
    return model


def text_config_from_hf(hf: Qwen3VLConfig) -> QwenTextConfig:
    t = hf.text_config
    rope = t.rope_parameters
    return QwenTextConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_layers=t.num_hidden_layers,
        num_heads=t.num_attention_heads, num_kv_heads=t.num_key_value_heads, head_dim=t.head_dim,
        intermediate_size=t.intermediate_size, rms_norm_eps=t.rms_norm_eps, rope_theta=float(rope["rope_theta"]),
        mrope_section=tuple(rope["mrope_section"]), max_position_embeddings=t.max_position_embeddings,
        hidden_act=t.hidden_act)


def vision_config_from_hf(hf: Qwen3VLConfig) -> QwenVisionConfig:
    v = hf.vision_config
    return QwenVisionConfig(
        depth=v.depth, hidden_size=v.hidden_size, num_heads=v.num_heads, intermediate_size=v.intermediate_size,
        patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size, spatial_merge_size=v.spatial_merge_size,
        num_position_embeddings=v.num_position_embeddings,
        deepstack_visual_indexes=tuple(v.deepstack_visual_indexes), hidden_act=v.hidden_act)


def expert_config_from_hf(hf: DINOv3ViTConfig, ours: ExpertConfig) -> ExpertConfig:
    """Architecture fields from the HF config; run-time choices (resolution, augmentation) kept from `ours`."""
    return dataclasses.replace(
        ours, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size, patch_size=hf.patch_size,
        num_register_tokens=hf.num_register_tokens, use_gated_mlp=hf.use_gated_mlp, hidden_act=hf.hidden_act,
        layerscale_value=ours.layerscale_value,  # only an init value; pretrained LayerScale weights override it
        layer_norm_eps=hf.layer_norm_eps, rope_theta=hf.rope_theta)


# ---- attribute paths (transformers 5.x; test_modeling checks them against HF's own forward) ----

def text_layers(vlm: Qwen3VLModel) -> nn.ModuleList:
    """Qwen3VLTextDecoderLayer list: `.input_layernorm`, `.self_attn.{q,k,v,o}_proj`, `.self_attn.{q,k}_norm`,
    `.post_attention_layernorm`, `.mlp`."""
    return vlm.language_model.layers


def expert_layers(expert: DINOv3ViTModel) -> nn.ModuleList:
    """DINOv3ViTLayer list: `.norm1`, `.attention.{q,k,v,o}_proj`, `.layer_scale1`, `.norm2`, `.mlp`,
    `.layer_scale2`."""
    return expert.model.layer


def project_vla_qkv(layer: nn.Module, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q/k/v of one Qwen3-VL decoder layer, with its q_norm/k_norm and MRoPE applied, as Qwen's attention does.

    normed: (B, N, C) after input_layernorm -> q (B, Hq, N, D), k and v (B, Hkv, N, D).
    """
    attn = layer.self_attn
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    q = attn.q_norm(attn.q_proj(normed).view(shape)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(normed).view(shape)).transpose(1, 2)
    v = attn.v_proj(normed).view(shape).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def dinov3_shallow_forward(expert: DINOv3ViTModel, pixels: torch.Tensor, num_layers: int,
                           layer_call: Callable[..., Any] | None = None) -> torch.Tensor:
    """DINOv3 embeddings and its first `num_layers` layers: (n, 3, He, We) -> (n, prefix + P, C_e).

    layer_call(fn, *args) runs each layer when given (DeepVisionVLA.layer_call: activation checkpointing).
    """
    pixels = pixels.to(expert.embeddings.patch_embeddings.weight.dtype)
    tokens = expert.embeddings(pixels)
    rope = expert.rope_embeddings(pixels)
    for layer in expert_layers(expert)[:num_layers]:
        tokens = (layer(tokens, position_embeddings=rope) if layer_call is None
                  else layer_call(_dinov3_layer, layer, tokens, rope))
    return tokens


def _dinov3_layer(layer: nn.Module, tokens: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return layer(tokens, position_embeddings=rope)


def repeat_kv_heads(x: torch.Tensor, num_q_heads: int) -> torch.Tensor:
    """(B, Hkv, L, D) -> (B, Hq, L, D), each key/value head repeated for its query group.

    SDPA's enable_gqa together with a mask sends CUDA to the math kernel; repeated heads keep the
    memory-efficient kernel eligible (same numbers: the math path repeats the heads the same way).
    """
    return repeat_kv(x, num_q_heads // x.shape[1])


# ---- Qwen3-VL vision tower with static shapes ----

@dataclasses.dataclass(frozen=True)
class VisionGrid:
    """What the Qwen3-VL vision tower derives from grid_thw, precomputed once for one fixed image size.

    HF derives these from grid_thw in every forward with .tolist() (a host sync that also blocks CUDA-graph
    capture) and splits attention per image the same way. All images here share one grid, so the tables
    are computed once, for one image, and reused.
    """

    interp_index: torch.Tensor  # (P, taps) long: rows of the learned position table per patch
    interp_weight: torch.Tensor  # (P, taps) float32 bilinear weights
    rope_position: torch.Tensor  # (P, 2) long: (row, column) of each patch, merge-block order

    @property
    def patches_per_image(self) -> int:
        return int(self.interp_index.shape[0])


def qwen_vision_grid(visual: nn.Module, grid_h_patches: int, grid_w_patches: int, device: torch.device
                     ) -> VisionGrid:
    """The tables for one (grid_h_patches x grid_w_patches) image, by HF's own helpers, on `device`."""
    grid_thw = torch.tensor([[1, grid_h_patches, grid_w_patches]])
    index, weight = get_vision_interpolation_indices_and_weights(
        grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.spatial_merge_size)
    position = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
    return VisionGrid(index.to(device), weight.to(device), position.to(device))


def qwen_vision_forward(visual: nn.Module, pixels: torch.Tensor, grid: VisionGrid,
                        layer_call: Callable[..., Any] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Qwen3VLVisionModel.forward for equally sized images, with no host sync and one batched SDPA per block.

    pixels (n * P, 3 * T * p * p) in Qwen's patch layout -> merged tokens (n * P / 4, C_llm) and one
    DeepStack feature of the same shape per deepstack index. Same ops as HF's SDPA path; HF's per-image
    attention loop becomes a batch dimension. layer_call(fn, *args) runs each block when given (activation
    checkpointing).
    """
    per_image = grid.patches_per_image
    num_images = pixels.shape[0] // per_image
    hidden = visual.patch_embed(pixels)  # (n * P, C_v)
    pos_embeds = (visual.pos_embed(grid.interp_index) * grid.interp_weight[:, :, None]).sum(1)  # (P, C_v)
    hidden = hidden + pos_embeds.repeat(num_images, 1).to(hidden.dtype)
    cos, sin = visual.rotary_pos_emb(hidden, grid.rope_position.repeat(num_images, 1))  # (n * P, D) each
    deepstack = []
    for index, block in enumerate(visual.blocks):
        hidden = (_vision_block(block, hidden, cos, sin, num_images) if layer_call is None
                  else layer_call(_vision_block, block, hidden, cos, sin, num_images))
        if index in visual.deepstack_visual_indexes:
            merger = visual.deepstack_merger_list[visual.deepstack_visual_indexes.index(index)]
            deepstack.append(merger(hidden))
    return visual.merger(hidden), deepstack


def _vision_block(block: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_images: int
                  ) -> torch.Tensor:
    hidden = hidden + _vision_attention(block.attn, block.norm1(hidden), cos, sin, num_images)
    return hidden + block.mlp(block.norm2(hidden))


def _vision_attention(attn: nn.Module, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      num_images: int) -> torch.Tensor:
    """Qwen3VLVisionAttention with the images as a batch: normed (n * P, C_v) -> (n * P, C_v)."""
    length = normed.shape[0]
    q, k, v = attn.qkv(normed).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)  # (n * P, heads, D)

    def images(x: torch.Tensor) -> torch.Tensor:
        return x.view(num_images, length // num_images, *x.shape[1:]).transpose(1, 2)  # (n, heads, P, D)

    out = F.scaled_dot_product_attention(images(q), images(k), images(v), scale=attn.scaling)
    return attn.proj(out.transpose(1, 2).reshape(length, -1))
