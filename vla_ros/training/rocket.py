"""ROCKET auxiliary loss (deepvision_vla.md §4): align chosen VLA layers to a frozen DINOv3's layers.

One projector is shared by every layer pair (LayerNorm -> Linear -> GELU -> Linear into the teacher width).
Pair i uses only the first units_i hidden units (Matryoshka), units rising linearly from rocket_min_width of
the hidden width at the shallowest VLA layer to all of it at the deepest. Per pair the loss is
1 - mean cosine similarity between the projected VLA hidden states at the visual-token positions and the
teacher's patch tokens resampled (bilinear, antialiased) to the VLA token grid; pairs are averaged.

The teacher sees the model's expert-branch pixels (ModelInputs.expert_pixels), in eval mode without gradient.
VLA hidden states are read with forward pre-hooks on the LLM layers' input norms (and the final norm), so the
model code is unchanged; hidden-state index i is the residual stream entering LLM layer i (index L: after the
last layer, before the final norm), the same numbering as Hugging Face's `hidden_states`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig, ExpertConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import ModelInputs


def balanced_layers(num_layers: int, count: int) -> tuple[int, ...]:
    """`count` hidden-state indices spread evenly over 1..num_layers, the deepest being num_layers."""
    if not 1 <= count <= num_layers:
        raise ConfigError(f"rocket_num_pairs={count}: must be in [1, {num_layers}] for a {num_layers}-layer stack")
    return tuple(round(num_layers * (i + 1) / count) for i in range(count))


def _resolve(indices: Sequence[int], num_layers: int, field: str) -> tuple[int, ...]:
    resolved = tuple(i + num_layers + 1 if i < 0 else i for i in indices)
    bad = [i for i, r in zip(indices, resolved) if not 0 <= r <= num_layers]
    if bad:
        raise ConfigError(f"{field}={tuple(indices)}: {bad} outside hidden-state indices 0..{num_layers} "
                          f"(or -1..-{num_layers + 1})")
    return resolved


@dataclasses.dataclass(frozen=True)
class LayerPair:
    vla_index: int  # VLA hidden-state index
    teacher_index: int  # teacher hidden-state index
    units: int  # Matryoshka: projector hidden units this pair uses


class MatryoshkaProjector(nn.Module):
    """The shared projector; `units` selects the leading hidden units (rows of fc1, columns of fc2)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, use_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if use_norm else nn.Identity()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, units: int) -> torch.Tensor:
        """x (..., in_dim) -> (..., out_dim) through the first `units` hidden units."""
        hidden = F.gelu(F.linear(self.norm(x), self.fc1.weight[:units], self.fc1.bias[:units]))
        return F.linear(hidden, self.fc2.weight[:, :units], self.fc2.bias)


class RocketAlignment(nn.Module):
    """Projector (trained) + teacher (frozen) + layer pairs; `capture` and `loss` are used around a forward."""

    def __init__(self, model_config: DeepVisionConfig, teacher: DINOv3ViTModel, teacher_config: ExpertConfig, *,
                 vla_layers: Sequence[int] = (), teacher_layers: Sequence[int] = (), num_pairs: int = 4,
                 min_width: float = 0.2, hidden_dim: int = 0, use_norm: bool = True) -> None:
        super().__init__()
        num_vla = model_config.vlm.text.num_layers
        num_teacher = len(backbones.expert_layers(teacher))
        if vla_layers:
            vla = _resolve(vla_layers, num_vla, "rocket_vla_layers")
            taught = _resolve(teacher_layers, num_teacher, "rocket_teacher_layers")
        else:
            vla, taught = balanced_layers(num_vla, num_pairs), balanced_layers(num_teacher, num_pairs)
        hidden_dim = hidden_dim or 2 * teacher_config.hidden_size
        depth_rank = {index: rank for rank, index in enumerate(sorted(set(vla)))}
        steps = max(1, len(depth_rank) - 1)
        self.pairs = tuple(
            LayerPair(v, t, max(1, int((min_width + (1.0 - min_width) * depth_rank[v] / steps) * hidden_dim)))
            for v, t in zip(vla, taught))
        if len(depth_rank) == 1:  # a single VLA layer uses the whole projector
            self.pairs = tuple(dataclasses.replace(p, units=hidden_dim) for p in self.pairs)
        self.token_grid = model_config.vlm.token_grid
        self.teacher_prefix = teacher_config.num_prefix_tokens
        self.teacher_patch_px = teacher_config.patch_size
        self.projector = MatryoshkaProjector(model_config.vlm.text.hidden_size, hidden_dim,
                                             teacher_config.hidden_size, use_norm)
        self.teacher = teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> RocketAlignment:
        super().train(mode)
        self.teacher.eval()  # frozen: never in train mode (no RoPE augmentation, no dropout)
        return self

    @contextlib.contextmanager
    def capture(self, model: DeepVisionVLA) -> Iterator[dict[int, torch.Tensor]]:
        """Record the VLA residual stream at every paired hidden-state index during one forward."""
        layers = backbones.text_layers(model.vlm)
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for index in sorted({p.vla_index for p in self.pairs}):
            module = layers[index].input_layernorm if index < len(layers) else model.vlm.language_model.norm
            handles.append(module.register_forward_pre_hook(
                lambda _module, args, index=index: captured.__setitem__(index, args[0])))
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def teacher_states(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """pixels (n, 3, He, We) -> {teacher hidden-state index: (n, Nv, C_t) patch tokens on the VLA grid}."""
        wanted = {p.teacher_index for p in self.pairs}
        dtype = self.teacher.embeddings.patch_embeddings.weight.dtype
        pixels = pixels.to(dtype)
        tokens = self.teacher.embeddings(pixels)
        rope = self.teacher.rope_embeddings(pixels)
        states = {0: tokens} if 0 in wanted else {}
        for index, layer in enumerate(backbones.expert_layers(self.teacher)[: max(wanted)], start=1):
            tokens = layer(tokens, position_embeddings=rope)
            if index in wanted:
                states[index] = tokens
        grid = (pixels.shape[-2] // self.teacher_patch_px, pixels.shape[-1] // self.teacher_patch_px)
        return {index: self._to_vla_grid(state, grid) for index, state in states.items()}

    def _to_vla_grid(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(n, prefix + Ph*Pw, C_t) -> (n, gh*gw, C_t): patch tokens resampled to the VLA token grid."""
        patches = tokens[:, self.teacher_prefix:].float()
        maps = patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)  # (n, C_t, Ph, Pw)
        resized = F.interpolate(maps, size=self.token_grid, mode="bilinear", align_corners=False, antialias=True)
        return resized.flatten(2).transpose(1, 2)

    def loss(self, captured: dict[int, torch.Tensor], inputs: ModelInputs) -> torch.Tensor:
        """Mean over pairs of 1 - cos(projected VLA visual tokens, teacher tokens)."""
        if inputs.expert_pixels is None:
            raise ConfigError("ROCKET needs the expert branch's pixels; the baseline model has none")
        missing = sorted({p.vla_index for p in self.pairs} - set(captured))
        if missing:
            raise RuntimeError(f"ROCKET: no hidden state was captured at VLA indices {missing}")
        targets = self.teacher_states(inputs.expert_pixels)
        cameras, per_camera = inputs.visual_index.shape  # (C, Nv)
        visual = inputs.visual_index.flatten()
        losses = []
        for pair in self.pairs:
            hidden = captured[pair.vla_index][:, visual]  # (B, C*Nv, C_vla)
            hidden = hidden.reshape(-1, per_camera, hidden.shape[-1])  # (B*C, Nv, C_vla), camera-major per sample
            projected = self.projector(hidden, pair.units).float()
            cosine = F.cosine_similarity(projected, targets[pair.teacher_index], dim=-1)  # (B*C, Nv)
            losses.append(1.0 - cosine.mean())
        return torch.stack(losses).mean()


def expert_teacher(model: DeepVisionVLA) -> tuple[DINOv3ViTModel, ExpertConfig]:
    """A frozen copy of the model's own expert as it is now (call before training)."""
    if model.expert is None or model.config.expert is None:
        raise ConfigError("rocket_teacher_dir is empty and the model has no expert to copy: give a DINOv3 dir")
    return copy.deepcopy(model.expert), model.config.expert


def load_teacher(directory: str, model_config: DeepVisionConfig, dtype: torch.dtype) -> tuple[DINOv3ViTModel,
                                                                                              ExpertConfig]:
    """A DINOv3 from a local Hugging Face directory; it sees the model's expert pixels (resolution, mean/std)."""
    if model_config.expert is None:
        raise ConfigError("ROCKET needs the expert branch's pixels; the baseline model has none")
    config = backbones.expert_config_from_hf(
        DINOv3ViTConfig.from_pretrained(directory),
        dataclasses.replace(model_config.expert, base_weights_dir=directory))
    return backbones.load_dinov3(config, dtype), config
