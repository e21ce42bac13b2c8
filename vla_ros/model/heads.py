"""Action heads, pluggable by name. Only the OFT parallel L1 MLP head exists for now."""

from __future__ import annotations

import torch
from torch import nn

from vla_ros.errors import ConfigError
from vla_ros.model.configuration import HeadConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


class ParallelL1Head(nn.Module):
    """Two-layer MLP applied to every action token at once; L1 regression (DV §3.3.1, OpenVLA-OFT)."""

    def __init__(self, hidden_size: int, action_dim: int, config: HeadConfig) -> None:
        super().__init__()
        if config.activation not in _ACTIVATIONS:
            raise ConfigError(f"head.activation={config.activation!r}: must be one of {sorted(_ACTIVATIONS)}")
        width = config.hidden_dim or hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden_size, width), _ACTIVATIONS[config.activation](),
                                 nn.Linear(width, action_dim))

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(action_hidden)  # (B, H, C) -> (B, H, A), normalised units

    @staticmethod
    def loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 over (B, H, A) in normalised units; computed in fp32 so bf16 training sees the same number."""
        return (predicted.float() - target.float()).abs().mean()


HEADS: dict[str, type[ParallelL1Head]] = {"oft_mlp": ParallelL1Head}


def build_head(config: HeadConfig, hidden_size: int, action_dim: int) -> ParallelL1Head:
    if config.name not in HEADS:
        raise ConfigError(f"head.name={config.name!r}: must be one of the registered heads {sorted(HEADS)}")
    return HEADS[config.name](hidden_size, action_dim, config)
