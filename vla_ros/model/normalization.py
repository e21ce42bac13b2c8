"""Action and state normalisation (q01/q99 bounds to [-1, 1] by default, OFT/StarVLA practice [I §5.5.7])."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from vla_ros.errors import CheckpointError, ConfigError

NORM_MODES = ("quantile", "mean_std")
_EPS = 1e-8
Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureStats:
    """Per-dimension statistics of one feature (actions or state), each (D,) float64."""

    q01: np.ndarray
    q99: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        dims = {name: np.asarray(getattr(self, name)).shape for name in ("q01", "q99", "mean", "std")}
        if len(set(dims.values())) != 1 or len(dims["q01"]) != 1:
            raise ConfigError(f"FeatureStats shapes {dims}: all four must be the same (D,)")
        for name in dims:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(value)):
                raise ConfigError(f"FeatureStats.{name}={value.tolist()}: must be finite")
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    @classmethod
    def from_array(cls, values: np.ndarray) -> FeatureStats:
        """values (num_samples, D) -> stats over samples."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"expected finite values (num_samples > 0, D), got shape {values.shape}")
        return cls(q01=np.quantile(values, 0.01, axis=0), q99=np.quantile(values, 0.99, axis=0),
                   mean=values.mean(axis=0), std=values.std(axis=0))


@dataclasses.dataclass(frozen=True, eq=False)
class NormStats:
    action: FeatureStats
    state: FeatureStats | None = None
    mode: str = "quantile"  # "quantile": q01/q99 -> [-1, 1], clipped; "mean_std": z-score, not clipped

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ConfigError(f"NormStats.mode={self.mode!r}: must be one of {NORM_MODES}")

    @classmethod
    def from_arrays(cls, actions: np.ndarray, states: np.ndarray | None = None, mode: str = "quantile") -> NormStats:
        """actions (num_samples, A) (chunks flattened over H), states (num_samples, S)."""
        state = None if states is None else FeatureStats.from_array(states)
        return cls(action=FeatureStats.from_array(actions), state=state, mode=mode)

    def normalize_actions(self, actions: Array) -> Array:
        return _normalize(actions, self.action, self.mode)

    def unnormalize_actions(self, actions: Array) -> Array:
        return _unnormalize(actions, self.action, self.mode)

    def normalize_state(self, state: Array) -> Array:
        if self.state is None:
            raise ConfigError("NormStats.state is None: this checkpoint has no state statistics (use_proprio off)")
        return _normalize(state, self.state, self.mode)

    # ---- JSON ----

    def to_dict(self) -> dict:
        def feature(stats: FeatureStats | None) -> dict | None:
            return None if stats is None else {k: getattr(stats, k).tolist() for k in ("q01", "q99", "mean", "std")}
        return {"mode": self.mode, "action": feature(self.action), "state": feature(self.state)}

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        state = data.get("state")
        return cls(action=FeatureStats(**data["action"]), state=None if state is None else FeatureStats(**state),
                   mode=data.get("mode", "quantile"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} not found: expected normalisation statistics (NormStats JSON)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is not valid NormStats JSON "
                                  f"({{mode, action: {{q01, q99, mean, std}}, state}}): {err}") from err


def _as(stat: np.ndarray, like: Array) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(stat, dtype=like.dtype, device=like.device)
    return stat


def _normalize(x: Array, stats: FeatureStats, mode: str) -> Array:
    if mode == "mean_std":
        return (x - _as(stats.mean, x)) / _as(np.maximum(stats.std, _EPS), x)
    span = _as(np.maximum(stats.q99 - stats.q01, _EPS), x)
    return (2.0 * (x - _as(stats.q01, x)) / span - 1.0).clip(-1.0, 1.0)


def _unnormalize(y: Array, stats: FeatureStats, mode: str) -> Array:
    if mode == "mean_std":
        return y * _as(np.maximum(stats.std, _EPS), y) + _as(stats.mean, y)
    span = _as(np.maximum(stats.q99 - stats.q01, _EPS), y)
    return (y + 1.0) / 2.0 * span + _as(stats.q01, y)
