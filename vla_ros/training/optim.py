"""AdamW with one parameter group per part of the model, and a warm-up + cosine schedule per group."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_with_min_lr_schedule_with_warmup

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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """Per group: linear warm-up from peak/(w+1) to the peak, then a half cosine down to min(min_lr, peak).

    The multiplier is transformers' cosine-with-floor schedule. Its warm-up starts at 0, so the first optimizer
    step would not move the weights; reading it one step later, with one more warm-up and one more total step,
    gives (step+1)/(w+1) during warm-up and the same cosine after. Past config.steps the value of that step holds.
    """
    warmup, total = config.resolved_warmup_steps(), config.steps
    multipliers = [_cosine_with_floor(warmup + 1, total + 1, min(config.min_lr, group["lr"]) / group["lr"])
                   for group in optimizer.param_groups]
    return LambdaLR(optimizer, [functools.partial(_shifted, multiplier, total) for multiplier in multipliers])


def _cosine_with_floor(warmup_steps: int, total_steps: int, floor_ratio: float) -> Callable[[int], float]:
    """transformers' multiplier function (its builder wraps one in a LambdaLR over a single floor ratio; the
    groups here have one floor ratio each, so the function is taken from a builder run on a stand-in)."""
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_cosine_with_min_lr_schedule_with_warmup(stand_in, warmup_steps, total_steps,
                                                       min_lr_rate=floor_ratio).lr_lambdas[0]


def _shifted(multiplier: Callable[[int], float], total_steps: int, step: int) -> float:
    return multiplier(min(step, total_steps) + 1)
