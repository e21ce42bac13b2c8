"""The training objective: L1 in normalised units over the real (unpadded) chunk steps, plus optional ROCKET."""

from __future__ import annotations

import torch
from torch import nn

from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import ModelInputs
from vla_ros.training.rocket import RocketAlignment


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """predicted, target (B, H, A), mask (B, H) bool or float weights -> mean |error| over real steps and
    every dimension (weighted mean with weights).

    Steps past an episode's end (mask False / 0) carry the padded last action and add nothing. Computed in fp32
    so a bf16 forward reports the same number. Every batch has a real step: a chunk starts at a real frame.
    """
    error = (predicted.float() - target.float()).abs() * mask[..., None]  # (B, H, A)
    return error.sum() / (mask.sum() * predicted.shape[-1])


class TrainingObjective(nn.Module):
    """The model plus the optional ROCKET alignment: one module, so DDP reduces the projector's gradients too.

    forward(inputs, target (B, H, A) normalised, mask (B, H)) -> {"loss", "l1"[, "align"]} scalars.
    """

    def __init__(self, model: DeepVisionVLA, rocket: RocketAlignment | None = None, rocket_weight: float = 0.0,
                 keep_ratio: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.rocket = rocket
        self.rocket_weight = rocket_weight
        self.keep_ratio = keep_ratio

    def forward(self, inputs: ModelInputs, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.rocket is None:
            out = self.model(inputs, keep_ratio=self.keep_ratio)
            l1 = masked_l1(out.actions, target, mask)
            return {"loss": l1, "l1": l1}
        with self.rocket.capture(self.model) as captured:
            out = self.model(inputs, keep_ratio=self.keep_ratio)
        l1 = masked_l1(out.actions, target, mask)
        align = self.rocket.loss(captured, inputs)
        return {"loss": l1 + self.rocket_weight * align, "l1": l1, "align": align}
