"""The learning-rate schedule: warm-up then cosine to a per-group floor, identical after a resume."""

from __future__ import annotations

import math

import pytest
import torch

from vla_ros.training.config import TrainConfig
from vla_ros.training.optim import build_scheduler

PEAKS = (1e-4, 5e-7)  # the second group's peak is below min_lr: it stays at its peak after the warm-up


def _optimizer() -> torch.optim.AdamW:
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in PEAKS])


def _lrs(steps: int, warmup: int, min_lr: float = 1e-6) -> list[list[float]]:
    optimizer = _optimizer()
    scheduler = build_scheduler(optimizer, TrainConfig(steps=steps, warmup_steps=warmup, min_lr=min_lr))
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_warm_up_is_linear_from_the_first_step_and_cosine_ends_at_the_floor():
    """Kills: a warm-up whose first step has learning rate 0 (a wasted optimizer step), a warm-up one step too
    long or short, a cosine that does not start at the peak or ends above the floor, and one floor ratio for
    every group (a group with a peak below min_lr must not rise to min_lr)."""
    steps, warmup, floor = 20, 4, 1e-6
    lrs = _lrs(steps, warmup, floor)
    for step in range(warmup):
        assert lrs[step][0] == pytest.approx(PEAKS[0] * (step + 1) / (warmup + 1))
    assert lrs[warmup][0] == pytest.approx(PEAKS[0])
    for step in range(warmup, steps):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        assert lrs[step][0] == pytest.approx(floor + (PEAKS[0] - floor) * cosine)
        assert lrs[step][1] == pytest.approx(PEAKS[1])
    assert all(a > b for a, b in zip([lr[0] for lr in lrs[warmup:]], [lr[0] for lr in lrs[warmup + 1:]]))


def test_schedule_resumes_from_its_state_dict():
    """Kills: a schedule whose state (step count) is not in its state_dict, so a resumed run restarts the
    warm-up."""
    config = TrainConfig(steps=12, warmup_steps=3)
    optimizer = _optimizer()
    scheduler = build_scheduler(optimizer, config)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    resumed_optimizer = _optimizer()
    resumed = build_scheduler(resumed_optimizer, config)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    for _ in range(5):
        assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
        for opt, sched in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            opt.step()
            sched.step()
