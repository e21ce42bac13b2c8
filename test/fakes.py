"""Deterministic test policies behind vla_ros.types.Policy (never used by launch files or the demo)."""

from __future__ import annotations

import threading

import numpy as np

from vla_ros.config.policy import DEFAULT_JOINTS
from vla_ros.types import Observation, PolicyOutput, PolicySpec


class RampPolicy:
    """Actions = current state + k * step for k = 1..H, so every chunk is predictable."""

    def __init__(self, joint_names=DEFAULT_JOINTS, horizon: int = 8, dt_s: float = 0.1,
                 image_size_px=(240, 320), cameras=("front",), step: float = 0.01,
                 robot_type: str = "sim_arm") -> None:
        self._spec = PolicySpec(joint_names=tuple(joint_names), action_names=tuple(joint_names),
                                action_space="joint_position", horizon=horizon, dt_s=dt_s,
                                camera_names=tuple(cameras), image_size_px=tuple(image_size_px),
                                robot_type=robot_type)
        self.step = step
        self.keep_ratio = 0.5
        self.calls: list[Observation] = []
        self.fail_next = threading.Event()

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    def set_keep_ratio(self, keep_ratio: float) -> None:
        self.keep_ratio = keep_ratio

    def predict(self, obs: Observation) -> PolicyOutput:
        if self.fail_next.is_set():
            self.fail_next.clear()
            raise RuntimeError("planted failure")
        self.calls.append(obs)
        ks = np.arange(1, self._spec.horizon + 1, dtype=np.float64)[:, None]
        actions = obs.state[None, :] + ks * self.step  # (H, A)
        return PolicyOutput(actions=actions, kept_expert_tokens=int(round(64 * self.keep_ratio)))
