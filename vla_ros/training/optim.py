"""AdamW with one parameter group per part of the model, and a warm-up + cosine schedule per group."""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vla_ros.errors import ConfigError
from vla_ros.training.config import TrainConfig

log = logging.getLogger(__name__)

# Parameter-name prefixes inside TrainingObjective -> group; everything else is a new module.
_PREFIXES = (("model.vlm.", "vlm"), ("model.expert.", "expert"), ("model.action_head.", "head"))
GROUPS = ("vlm", "expert", "new", "head", "lora")


def group_of(name: str) -> str:
    """vlm: Qwen3-VL; expert: DINOv3; head: action head; new: aligners, proprio, ROCKET projector; lora: peft
    adapters (strategy lora)."""
    if ".lora_" in name:
        return "lora"
    return next((group for prefix, group in _PREFIXES if name.startswith(prefix)), "new")


def peak_lrs(config: TrainConfig) -> dict[str, float]:
    return {"vlm": config.lr_vlm, "expert": config.lr_expert, "new": config.lr_new, "head": config.lr_head,
            "lora": config.lr_lora}


def build_optimizer(objective: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """Groups named '<group>' or '<group>/no_decay'. A group with learning rate 0 is frozen (requires_grad off).

    Weight decay applies to matrices only (norm scales, biases and embeddings' 1-D params are exempt).
    """
    lrs = peak_lrs(config)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    frozen: dict[str, int] = {}
    for name, parameter in objective.named_parameters():
        if not parameter.requires_grad:
            continue
        group = group_of(name)
        if lrs[group] == 0.0:
            parameter.requires_grad_(False)
            frozen[group] = frozen.get(group, 0) + parameter.numel()
            continue
        decay = config.weight_decay > 0.0 and parameter.ndim >= 2
        buckets.setdefault((group, decay), []).append(parameter)
    if frozen:
        log.info("frozen (learning rate 0): %s", ", ".join(f"{g} {n:,} parameters" for g, n in frozen.items()))
    groups = [{"params": params, "lr": lrs[group], "weight_decay": config.weight_decay if decay else 0.0,
               "name": group if decay or config.weight_decay == 0.0 else f"{group}/no_decay"}
              for (group, decay), params in sorted(buckets.items(), key=lambda kv: (GROUPS.index(kv[0][0]), kv[0][1]))]
    if not groups:
        raise ConfigError(f"every parameter is frozen (learning rates {lrs}): set one above 0")
    return torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps)


@dataclasses.dataclass
class WarmupCosine:
    """lr multiplier at optimizer step `step` (0-based): linear warm-up from 0, then cosine to min_lr."""

    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        floor = min(self.min_lr, self.peak_lr)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        lr = floor + (self.peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / self.peak_lr


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    warmup = config.resolved_warmup_steps()
    schedules = [WarmupCosine(group["lr"], config.min_lr, warmup, config.steps) for group in optimizer.param_groups]
    return LambdaLR(optimizer, schedules)
