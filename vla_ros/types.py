"""Plain data passed between the layers (numpy + stdlib only, no torch, no ROS).

Dimension letters used in shape comments across the package:
  B batch, H chunk horizon, A action dim, S state dim, J joints,
  N VLA tokens, M expert tokens kept, P expert patches (before pruning), L layers,
  Hq / Hkv query / key-value heads, D head dim, C hidden.
Images are (H_img, W_img, 3) uint8 RGB in numpy and (B, 3, H_img, W_img) as tensors.
Stamps are integer nanoseconds (`_ns`), durations float seconds (`_s`).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

ACTION_SPACES = ("joint_position", "joint_delta")


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """What a policy expects and produces; policy_node checks it against its config at start-up."""

    joint_names: tuple[str, ...]  # state order (J,)
    action_names: tuple[str, ...]  # one per action dimension (A,)
    action_space: str  # one of ACTION_SPACES
    horizon: int  # H actions per chunk
    dt_s: float  # seconds between consecutive actions of a chunk
    camera_names: tuple[str, ...]  # one image per camera, in this order
    image_size_px: tuple[int, int]  # (height, width) the policy wants each frame resized to
    robot_type: str = "sim_arm"  # the robot it was trained on (the dataset's robot_type)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)


@dataclasses.dataclass(frozen=True)
class Observation:
    """One synchronised observation."""

    images: tuple[np.ndarray, ...]  # per camera (H_img, W_img, 3) uint8 RGB
    state: np.ndarray  # (J,) float64, in PolicySpec.joint_names order
    instruction: str
    stamp_ns: int  # stamp of the oldest source message: the chunk is "computed from" this time


@dataclasses.dataclass(frozen=True)
class PolicyOutput:
    actions: np.ndarray  # (H, A) float64, physical units
    kept_expert_tokens: int = 0  # AGVP tokens kept (0 for policies without an expert)
    info: dict = dataclasses.field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """Anything policy_node can run. The DeepVision-VLA adapter and test policies implement it."""

    @property
    def spec(self) -> PolicySpec: ...

    def predict(self, obs: Observation) -> PolicyOutput: ...

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Apply a new AGVP keep ratio from the next call (no-op for policies without pruning)."""


@dataclasses.dataclass(frozen=True)
class ActionChunk:
    """A chunk as the safety layer and the recorder see it (mirror of msg/ActionChunk)."""

    chunk_id: int
    stamp_ns: int  # stamp of the observation the chunk was computed from; action k is due at stamp + k*dt
    action_space: str
    names: tuple[str, ...]  # (A,)
    dt_s: float
    actions: np.ndarray  # (H, A) float64

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])
