"""Joint limits and the per-tick limiter that keeps every command inside them.

Commands are positions sent one control period `dt_s` apart. Velocity is
(command - previous command) / dt_s and acceleration the change of that velocity over dt_s,
exactly what a position-controlled robot sees. The limiter keeps, for every joint and every tick:
  - position inside [position_min, position_max],
  - |velocity| <= min(max_velocity, max_step / dt_s),
  - |acceleration| <= max_acceleration,
  - the arm able to stop before a position limit by decelerating at max_acceleration
    (otherwise a limit could only be respected by breaking the acceleration limit).
The last rule makes the set of allowed velocities never empty, so the hard limits hold for any
target sequence (proof sketch in `limit_step`). Approaching a target far away, the limiter also
brakes so that it stops on the target instead of overshooting it (a soft rule: it yields to the
hard limits).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from vla_ros.config.safety import SafetyConfig
from vla_ros.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class JointLimits:
    """Effective per-joint limits in joint_names order (arrays are read-only)."""

    joint_names: tuple[str, ...]
    position_min_rad: np.ndarray  # (J,)
    position_max_rad: np.ndarray  # (J,)
    max_velocity_rad_s: np.ndarray  # (J,)
    max_acceleration_rad_s2: np.ndarray  # (J,)
    max_step_rad: float

    @classmethod
    def from_config(cls, cfg: SafetyConfig) -> JointLimits:
        """Limits from the config, with position and velocity from the URDF when one is named."""
        lim = cfg.limits
        position_min = np.array(lim.position_min_rad, dtype=np.float64)
        position_max = np.array(lim.position_max_rad, dtype=np.float64)
        velocity = np.array(lim.max_velocity_rad_s, dtype=np.float64)
        if lim.urdf_path:
            arm_joints = [n for n in cfg.joint_names if n != cfg.gripper.joint_name]
            for name, urdf in read_urdf_limits(lim.urdf_path, arm_joints).items():
                j = cfg.joint_names.index(name)
                if urdf.lower_rad is not None:  # continuous joints keep the configured range
                    position_min[j], position_max[j] = urdf.lower_rad, urdf.upper_rad
                velocity[j] = urdf.velocity_rad_s
        arrays = [position_min, position_max, velocity,
                  np.array(lim.max_acceleration_rad_s2, dtype=np.float64)]
        for a in arrays:
            a.flags.writeable = False
        return cls(cfg.joint_names, *arrays, max_step_rad=lim.max_step_rad)

    def velocity_bound_rad_s(self, dt_s: float) -> np.ndarray:
        """(J,) largest |velocity| allowed for one tick of dt_s (max_step applies per tick)."""
        return np.minimum(self.max_velocity_rad_s, self.max_step_rad / dt_s)


@dataclasses.dataclass(frozen=True)
class UrdfJointLimit:
    lower_rad: float | None  # None for continuous joints (no position limits)
    upper_rad: float | None
    velocity_rad_s: float


def read_urdf_limits(path: str | Path, joint_names: list[str]) -> dict[str, UrdfJointLimit]:
    """<limit lower upper velocity> of each named joint; every problem raises ConfigError.

    A joint that is missing, not revolute/prismatic/continuous, or lacks an attribute is an error
    rather than a fallback: URDF's own default for a missing lower/upper is 0, a frozen joint.
    """
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError as err:
        raise ConfigError(f"limits.urdf_path: {path} not found") from err
    except ElementTree.ParseError as err:
        raise ConfigError(f"limits.urdf_path: {path} is not valid XML: {err}") from err
    joints = {j.get("name"): j for j in root.iter("joint")}
    out: dict[str, UrdfJointLimit] = {}
    for name in joint_names:
        joint = joints.get(name)
        if joint is None:
            raise ConfigError(f"limits.urdf_path: joint {name!r} not found in {path}; it has "
                              f"{sorted(n for n in joints if n)}")
        kind = joint.get("type")
        if kind not in ("revolute", "prismatic", "continuous"):
            raise ConfigError(f"limits.urdf_path: joint {name!r} in {path} is {kind!r}; expected "
                              "revolute, prismatic or continuous")
        limit = joint.find("limit")
        needed = ("velocity",) if kind == "continuous" else ("lower", "upper", "velocity")
        if limit is None or any(limit.get(a) is None for a in needed):
            raise ConfigError(f"limits.urdf_path: joint {name!r} in {path} needs <limit "
                              f"{' '.join(needed)}>")
        try:
            values = {a: float(limit.get(a)) for a in needed}
        except ValueError as err:
            raise ConfigError(f"limits.urdf_path: joint {name!r} in {path} has a non-numeric "
                              f"<limit>: {err}") from err
        if not all(np.isfinite(v) for v in values.values()) or values["velocity"] <= 0.0:
            raise ConfigError(f"limits.urdf_path: joint {name!r} in {path}: limits must be finite "
                              f"with velocity > 0, got {values}")
        if kind != "continuous" and not values["lower"] < values["upper"]:
            raise ConfigError(f"limits.urdf_path: joint {name!r} in {path}: lower {values['lower']} "
                              f"must be below upper {values['upper']}")
        out[name] = UrdfJointLimit(values.get("lower"), values.get("upper"), values["velocity"])
    return out


@dataclasses.dataclass(frozen=True)
class MotionState:
    """The last command sent and the velocity it was reached with."""

    position_rad: np.ndarray  # (J,)
    velocity_rad_s: np.ndarray  # (J,) (last command - the one before) / dt_s

    @classmethod
    def at_rest(cls, position_rad: np.ndarray) -> MotionState:
        position = np.array(position_rad, dtype=np.float64)
        return cls(position, np.zeros_like(position))

    @property
    def is_at_rest(self) -> bool:
        return not np.any(self.velocity_rad_s)


def braking_velocity_bound(distance_rad: np.ndarray, accel_rad_s2: np.ndarray,
                           dt_s: float) -> np.ndarray:
    """Largest velocity u >= 0 for the next tick such that the tick plus a full stop fits in distance.

    Stopping from u at `accel` per tick takes the velocities u - a*dt, u - 2*a*dt, ... (> 0), so the
    distance covered is S(u) = dt*u + dt*sum_k max(u - k*a*dt, 0). S is continuous, piecewise linear
    and increasing with S(n*a*dt) = a*dt^2*n*(n+1)/2; inverting on the segment that holds
    `distance` gives the exact discrete answer (a continuous v^2/2a bound would overshoot).
    """
    distance = np.maximum(distance_rad, 0.0)  # a hair past a limit after rounding: do not move out
    unit = accel_rad_s2 * dt_s * dt_s
    n = np.floor((np.sqrt(1.0 + 8.0 * distance / unit) - 1.0) / 2.0)
    return (distance + unit * n * (n + 1.0) / 2.0) / (dt_s * (n + 1.0))


def limit_step(state: MotionState, target_rad: np.ndarray, target_velocity_rad_s: np.ndarray,
               limits: JointLimits, dt_s: float) -> MotionState:
    """The next command towards `target_rad` that keeps every limit (see the module docstring).

    target_velocity_rad_s is how fast the target itself moves (feed-forward): tracking a plan
    that moves within the limits then has no lag. Hard limits are applied last, so they win.
    Why the allowed set is never empty: the previous tick left the arm able to stop, so braking
    by a*dt is allowed by the stopping rule; braking is within the acceleration limit, and
    |velocity| <= bound held before, so braking is within the velocity bound too.
    """
    x, v = state.position_rad, state.velocity_rad_s
    accel = limits.max_acceleration_rad_s2
    error = target_rad - x
    velocity = error / dt_s
    # Soft: brake so as to stop on the target rather than pass it, in the target's moving frame.
    ahead = error - target_velocity_rad_s * dt_s
    approach_high = np.where(ahead >= 0.0,
                             target_velocity_rad_s + braking_velocity_bound(ahead, accel, dt_s), np.inf)
    approach_low = np.where(ahead < 0.0,
                            target_velocity_rad_s - braking_velocity_bound(-ahead, accel, dt_s), -np.inf)
    velocity = np.clip(velocity, approach_low, approach_high)
    # Hard: acceleration, then velocity and stopping distance (both intervals contain 0; if a live
    # rate change made them disjoint from the acceleration interval, slowing down wins).
    velocity = np.clip(velocity, v - accel * dt_s, v + accel * dt_s)
    bound = limits.velocity_bound_rad_s(dt_s)
    high = np.minimum(bound, braking_velocity_bound(limits.position_max_rad - x, accel, dt_s))
    low = np.maximum(-bound, -braking_velocity_bound(x - limits.position_min_rad, accel, dt_s))
    velocity = np.clip(velocity, low, high)
    position = np.clip(x + velocity * dt_s, limits.position_min_rad, limits.position_max_rad)
    return MotionState(position, (position - x) / dt_s)
