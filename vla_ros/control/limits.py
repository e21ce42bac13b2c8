"""Joint limits and the per-tick limiter that keeps every command inside them.

Commands are positions; each is due `dt_s` after the previous one, dt_s being the real spacing
of the two commands (the control loop may run late or early under load, so it is not always the
nominal period). Velocity is (command - previous command) / dt_s and acceleration the change of
that velocity over dt_s: what the robot sees in real time. The limiter keeps, for every joint and
every tick:
  - position inside [position_min, position_max],
  - |velocity| <= max_velocity, and <= max_step / period (period: the nominal control period, so
    max_step is the step of an on-time tick; when a live rate change lowers this bound below the
    current velocity, the arm slows down to it at max_acceleration instead of at once),
  - |acceleration| <= max_acceleration,
  - the arm able to stop before a position limit by decelerating at max_acceleration, whatever
    the spacing of the following ticks (otherwise a limit could only be respected by breaking the
    acceleration limit).
The last rule makes the set of allowed velocities never empty, so the hard limits hold for any
target sequence and any tick timing (proof sketch in `limit_step`). Approaching a target far
away, the limiter also brakes so that it stops on the target instead of overshooting it (a soft
rule: it yields to the hard limits).
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

    def velocity_bound_rad_s(self, period_s: float) -> np.ndarray:
        """(J,) largest |velocity| allowed at the nominal control period (max_step per period)."""
        return np.minimum(self.max_velocity_rad_s, self.max_step_rad / period_s)


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


def stopping_velocity_bound(distance_rad: np.ndarray, accel_rad_s2: np.ndarray,
                            dt_s: float) -> np.ndarray:
    """Largest u >= 0 with u*dt + u^2/(2a) <= distance: this tick at u, then any stop fits.

    Unlike braking_velocity_bound this does not assume the following ticks keep dt_s: if u
    satisfies it, braking by a*dt' over a next tick of any length dt' satisfies it again for the
    distance left (u'dt' + u'^2/2a = u^2/2a - a dt'^2/2 with u' = u - a dt'), so the hard position
    rule stays feasible whatever the control loop's timing. Written without cancellation.
    """
    distance = np.maximum(distance_rad, 0.0)  # a hair past a limit after rounding: do not move out
    return 2.0 * distance / (dt_s + np.sqrt(dt_s * dt_s + 2.0 * distance / accel_rad_s2))


def limit_step(state: MotionState, target_rad: np.ndarray, target_velocity_rad_s: np.ndarray,
               limits: JointLimits, dt_s: float, period_s: float | None = None) -> MotionState:
    """The next command towards `target_rad`, due dt_s after the previous one, within every limit.

    period_s is the nominal control period max_step applies to (default dt_s).
    target_velocity_rad_s is how fast the target itself moves (feed-forward): tracking a plan
    that moves within the limits then has no lag. Hard limits are applied last, so they win.
    Why the allowed set is never empty: the previous tick left the arm able to stop
    (stopping_velocity_bound), so braking by a*dt is allowed by the stopping rule and within the
    acceleration limit. Only the max_step bound can lie outside the acceleration interval (after a
    live rate change); then the arm decelerates at the acceleration limit towards it.
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
    # Hard: velocity bound and stopping distance, intersected with the acceleration interval.
    bound = limits.velocity_bound_rad_s(dt_s if period_s is None else period_s)
    high = np.minimum(bound, stopping_velocity_bound(limits.position_max_rad - x, accel, dt_s))
    low = np.maximum(-bound, -stopping_velocity_bound(x - limits.position_min_rad, accel, dt_s))
    accel_low, accel_high = v - accel * dt_s, v + accel * dt_s
    velocity = np.clip(velocity, np.maximum(low, accel_low), np.minimum(high, accel_high))
    velocity = np.where(accel_low > high, accel_low, np.where(accel_high < low, accel_high, velocity))
    # Rounding only; a stream that starts outside the limits may move back in but never snaps in.
    position = np.clip(x + velocity * dt_s, np.minimum(limits.position_min_rad, x),
                       np.maximum(limits.position_max_rad, x))
    return MotionState(position, (position - x) / dt_s)
