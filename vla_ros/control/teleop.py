"""TeleopController: from a leader arm or a gamepad to a stream of limited joint targets.

The pure core of teleop_node (the node converts messages and publishes each target as a short
ActionChunk to safety_node, which applies the robot's limits once more).

States. IDLE: nothing is sent. engage() starts a stream at rest at the measured position and
enters ENGAGING (leader: the follower follows the leader minus the engage-time gap, which shrinks
at engage_speed_ratio of the velocity limits, so a moving leader is caught up with too; refused when the leader is farther than engage_max_distance_rad, the start-up gate) or
ENGAGED directly (joy: the jog starts from rest). ENGAGING becomes ENGAGED once every driven joint
is within engaged_tolerance_rad of the leader. engage(False) enters RELEASING: the stream brakes
to rest within the acceleration limit, then IDLE. `engaged` is true in every state but IDLE, so a
policy resumes only once the arm is at rest (from the measured position).

Every target comes out of control.limits.limit_step, so within one stream every target is inside
the position limits and consecutive targets 1/rate_hz apart keep the velocity and acceleration
limits, whatever the device sends (the property test drives random device streams through it).

Watchdog. A device silent for device_timeout_s counts as released: the stream brakes to rest and
holds there (still engaged) until the device speaks again. Joy: releasing the deadman does the same.

Bad messages (wrong sizes, NaN/inf, unknown, missing or duplicate joint names) are refused whole and
counted by reason; a refused message is not a sign of life for the watchdog.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Callable, Sequence

import numpy as np

from vla_ros.config.teleop import TeleopConfig
from vla_ros.control.limits import JointLimits, MotionState, limit_step
from vla_ros.errors import ConfigError

# (q_arm (6,), twist (6,) = linear m/s + angular rad/s in the base frame, dt_s) -> q_arm target (6,)
CartesianStep = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


class TeleopState(enum.Enum):
    IDLE = "idle"
    ENGAGING = "engaging"
    ENGAGED = "engaged"
    RELEASING = "releasing"


class Refusal(enum.Enum):
    WRONG_SIZE = "wrong_size"  # names vs positions, or too few axes/buttons for the configured indices
    NON_FINITE = "non_finite"  # NaN or inf in a used value
    UNKNOWN_NAME = "unknown_name"  # a leader joint the mapping does not know
    MISSING_JOINT = "missing_joint"  # a mapped leader joint is absent
    DUPLICATE_NAME = "duplicate_name"  # a name appears twice
    ENGAGE_REFUSED = "engage_refused"  # engage() refused (no fresh joint state or device, leader too far)


class JoyEvent(enum.Enum):
    RECORD_START = "record_start"
    RECORD_STOP = "record_stop"
    RECORD_DISCARD = "record_discard"
    MARK_SUCCESS = "mark_success"


@dataclasses.dataclass(frozen=True)
class TeleopTick:
    target: np.ndarray | None  # (J,) joint_names order; None: send nothing
    state: TeleopState
    device_fresh: bool
    preview: np.ndarray  # (K, J) the next K targets if the device holds still (same limiter); (0, J) if none


@dataclasses.dataclass(frozen=True)
class TeleopStatus:
    state: TeleopState
    device: str
    engagements: int
    refused: dict[Refusal, int]
    last_reason: str


class DeviceMessageRefused(ValueError):
    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _limits(cfg: TeleopConfig) -> JointLimits:
    lim = cfg.limits
    arrays = [np.array(a, dtype=np.float64) for a in (lim.position_min_rad, lim.position_max_rad,
                                                     lim.max_velocity_rad_s, lim.max_acceleration_rad_s2)]
    # max_step is not a teleop notion: the velocity limits already bound every step.
    return JointLimits(cfg.joint_names, *arrays, max_step_rad=float(np.max(arrays[2])) / cfg.rate_hz + 1.0)


def map_leader(cfg: TeleopConfig, names: Sequence[str], positions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Leader JointState -> (follower targets (J,), driven (J,) bool); DeviceMessageRefused if bad.

    Targets of undriven joints are NaN (the caller keeps their position). Not clipped: the limiter does.
    """
    leader = cfg.leader
    if len(names) != len(positions):
        raise DeviceMessageRefused(Refusal.WRONG_SIZE, f"{len(names)} names but {len(positions)} positions")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if list(names).count(n) > 1})
        raise DeviceMessageRefused(Refusal.DUPLICATE_NAME, f"joint name(s) {dupes} appear twice")
    mapped = [n for n in leader.joint_names if n]
    unknown = [n for n in names if n not in mapped]
    if unknown:
        raise DeviceMessageRefused(Refusal.UNKNOWN_NAME, f"unknown leader joint(s) {unknown}; mapped: {mapped}")
    missing = [n for n in mapped if n not in names]
    if missing:
        raise DeviceMessageRefused(Refusal.MISSING_JOINT, f"leader joint(s) {missing} missing")
    index = {n: i for i, n in enumerate(names)}
    values = np.array([float(positions[index[n]]) if n else np.nan for n in leader.joint_names])
    driven = np.array([bool(n) for n in leader.joint_names])
    if not np.all(np.isfinite(values[driven])):
        bad = [n for n, v in zip(leader.joint_names, values) if n and not np.isfinite(v)]
        raise DeviceMessageRefused(Refusal.NON_FINITE, f"non-finite position of leader joint(s) {bad}")
    targets = np.where(driven, np.asarray(leader.scales) * values + np.asarray(leader.offsets_rad), np.nan)
    if not np.all(np.isfinite(targets[driven])):
        raise DeviceMessageRefused(Refusal.NON_FINITE, "scale * leader + offset overflows")
    return targets, driven


def _joy_indices(cfg: TeleopConfig) -> tuple[list[int], list[int]]:
    joy = cfg.joy
    axes = list(joy.cartesian_axes if joy.mode == "cartesian" else joy.joint_axes)
    buttons = [joy.deadman_button, joy.gripper_close_button, joy.gripper_open_button, joy.engage_button,
               joy.record_start_button, joy.record_stop_button, joy.record_discard_button, joy.success_button]
    return [a for a in axes if a >= 0], [b for b in buttons if b >= 0]


class TeleopController:
    """Single-threaded core (the node serialises calls). Call tick() at cfg.rate_hz."""

    def __init__(self, config: TeleopConfig, cartesian_step: CartesianStep | None = None) -> None:
        self._cartesian_step = cartesian_step
        self._count = len(config.joint_names)
        self._state = TeleopState.IDLE
        self._motion: MotionState | None = None
        self._measured: np.ndarray | None = None
        self._measured_ns: int | None = None
        self._device_ns: int | None = None
        self._leader_target: np.ndarray | None = None  # (J,), NaN where not driven
        self._axes = np.zeros(0)
        self._buttons: tuple[int, ...] = ()
        self._gripper_goal: float | None = None
        self._stop_target: np.ndarray | None = None  # where a braking stream comes to rest
        self._gap = np.zeros(len(config.joint_names))  # engaging: leader - follower offset, shrinking to 0
        self._engagements = 0
        self._refused: collections.Counter[Refusal] = collections.Counter()
        self._last_reason = ""
        self._cfg = config
        self.update_config(config)

    # ----------------------------------------------------------------------------- configuration
    @property
    def config(self) -> TeleopConfig:
        return self._cfg

    def update_config(self, config: TeleopConfig) -> None:
        if config.joy.mode == "cartesian" and config.device == "joy" and self._cartesian_step is None:
            raise ConfigError("joy.mode cartesian needs the arm's kinematics; none was given")
        if config.joint_names != self._cfg.joint_names or config.device != self._cfg.device:
            raise ConfigError("joint_names and device cannot change while running (restart required)")
        if config.joy != self._cfg.joy:  # a held message may not fit a new axis mapping: wait for the next
            self._device_ns, self._axes, self._buttons = None, np.zeros(0), ()
        self._cfg = config
        self._limits = _limits(config)
        # The ramp is a goal walking to the leader, not lower limits: switching limits mid-stream
        # could ask for more deceleration than the acceleration limit allows.
        self._ramp_speed = np.asarray(config.limits.max_velocity_rad_s) * config.engage_speed_ratio

    # ----------------------------------------------------------------------------- inputs
    def update_joint_state(self, positions: np.ndarray, stamp_ns: int) -> None:
        """Measured follower positions (J,) in joint_names order (converted and checked by the caller)."""
        self._measured = np.array(positions, dtype=np.float64)
        self._measured_ns = int(stamp_ns)

    def refuse(self, reason: Refusal, message: str) -> None:
        self._refused[reason] += 1
        self._last_reason = message

    def offer_leader(self, names: Sequence[str], positions: Sequence[float], now_ns: int) -> bool:
        """A leader JointState; False (counted) when refused. Ignored unless the device is the leader."""
        if self._cfg.device != "leader":
            return False
        try:
            target, _ = map_leader(self._cfg, names, positions)
        except DeviceMessageRefused as err:
            self.refuse(err.reason, f"leader message refused: {err}")
            return False
        self._leader_target = target
        self._device_ns = int(now_ns)
        return True

    def offer_joy(self, axes: Sequence[float], buttons: Sequence[int], now_ns: int) -> list[JoyEvent]:
        """A Joy message; returns the recording events of newly pressed buttons (engage is handled here).

        Refused (counted, no event, not a sign of life) when too short for the configured indices or
        when a used axis is not finite. Ignored unless the device is joy.
        """
        cfg = self._cfg
        if cfg.device != "joy":
            return []
        axes_needed, buttons_needed = _joy_indices(cfg)
        if len(axes) <= max(axes_needed, default=-1) or len(buttons) <= max(buttons_needed, default=-1):
            self.refuse(Refusal.WRONG_SIZE, f"joy message refused: {len(axes)} axes and {len(buttons)} buttons; "
                        f"the mapping uses axes up to {max(axes_needed, default=-1)} and buttons up to "
                        f"{max(buttons_needed, default=-1)}")
            return []
        values = np.asarray(axes, dtype=np.float64)
        if not np.all(np.isfinite(values[axes_needed])):
            self.refuse(Refusal.NON_FINITE, f"joy message refused: non-finite axes {list(values)}")
            return []
        previous = self._buttons
        pressed = tuple(int(b) != 0 for b in buttons)
        self._axes, self._buttons = values, pressed
        self._device_ns = int(now_ns)

        def edge(button: int) -> bool:
            return button >= 0 and pressed[button] and not (button < len(previous) and previous[button])

        joy = cfg.joy
        if edge(joy.engage_button):
            self.engage(self._state in (TeleopState.IDLE, TeleopState.RELEASING), now_ns)
        if edge(joy.gripper_close_button):
            self._gripper_goal = 1.0
        if edge(joy.gripper_open_button):
            self._gripper_goal = 0.0
        events = [(joy.record_start_button, JoyEvent.RECORD_START), (joy.record_stop_button, JoyEvent.RECORD_STOP),
                  (joy.record_discard_button, JoyEvent.RECORD_DISCARD), (joy.success_button, JoyEvent.MARK_SUCCESS)]
        return [event for button, event in events if edge(button)]

    # ----------------------------------------------------------------------------- engage / release
    @property
    def state(self) -> TeleopState:
        return self._state

    @property
    def engaged(self) -> bool:
        return self._state is not TeleopState.IDLE

    def engage(self, on: bool, now_ns: int) -> tuple[bool, str]:
        cfg = self._cfg
        if not on:
            if self._state is TeleopState.IDLE:
                return True, "already disengaged"
            self._state = TeleopState.RELEASING
            self._stop_target = self._stopping_point()
            return True, "disengaging: braking to rest, then the policy may resume"
        if self._state in (TeleopState.ENGAGING, TeleopState.ENGAGED):
            return True, "already engaged"
        if self._state is TeleopState.RELEASING:  # the stream is still moving: continue it, no jump
            self._state = TeleopState.ENGAGING if cfg.device == "leader" else TeleopState.ENGAGED
            self._stop_target = None
            self._gap = self._leader_gap(self._motion.position_rad)
            self._engagements += 1
            return True, "re-engaged while braking"
        if self._measured_ns is None or (now_ns - self._measured_ns) * 1e-9 > cfg.joint_state_timeout_s:
            return self._refuse_engage("no measured joint state younger than "
                                       f"joint_state_timeout_s {cfg.joint_state_timeout_s}")
        measured = self._measured
        if cfg.device == "leader":
            if not self._device_fresh(now_ns):
                return self._refuse_engage(f"no leader message within device_timeout_s {cfg.device_timeout_s}")
            distance = np.where(np.isfinite(self._leader_target), np.abs(self._leader_target - measured), 0.0)
            distance[[i for i, n in enumerate(cfg.joint_names) if n == cfg.gripper_joint]] = 0.0
            j = int(np.argmax(distance))
            if distance[j] > cfg.engage_max_distance_rad:
                return self._refuse_engage(f"leader puts {cfg.joint_names[j]} {distance[j]:.3f} rad from the "
                                           f"follower; engage_max_distance_rad is {cfg.engage_max_distance_rad}: "
                                           "move the leader closer first")
        self._motion = MotionState.at_rest(np.clip(measured, self._limits.position_min_rad,
                                                   self._limits.position_max_rad))
        self._gap = self._leader_gap(self._motion.position_rad)
        self._gripper_goal = None
        self._stop_target = None
        self._state = TeleopState.ENGAGING if cfg.device == "leader" else TeleopState.ENGAGED
        self._engagements += 1
        return True, f"engaged ({cfg.device}) from the measured position"

    def _leader_gap(self, position: np.ndarray) -> np.ndarray:
        """(J,) leader minus follower where the leader drives a joint (0 elsewhere, and for joy)."""
        if self._cfg.device != "leader" or self._leader_target is None:
            return np.zeros(self._count)
        return np.where(np.isfinite(self._leader_target), self._leader_target - position, 0.0)

    def _refuse_engage(self, message: str) -> tuple[bool, str]:
        self.refuse(Refusal.ENGAGE_REFUSED, f"engage refused: {message}")
        return False, f"engage refused: {message}"

    # ----------------------------------------------------------------------------- control loop
    def _device_fresh(self, now_ns: int) -> bool:
        return self._device_ns is not None and (now_ns - self._device_ns) * 1e-9 <= self._cfg.device_timeout_s

    def _stopping_point(self) -> np.ndarray:
        """Where braking at the acceleration limit brings the stream to rest (approximately)."""
        motion = self._motion
        velocity = motion.velocity_rad_s
        return motion.position_rad + velocity * np.abs(velocity) / (2.0 * self._limits.max_acceleration_rad_s2)

    def _device_goal(self, dt_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(target (J,), target velocity (J,)) the device asks for now; None: stop."""
        cfg, position = self._cfg, self._motion.position_rad
        if cfg.device == "leader":
            target = np.where(np.isfinite(self._leader_target), self._leader_target, position)
            if self._state is TeleopState.ENGAGING:  # ramp: follow the leader minus a gap that shrinks
                self._gap = np.sign(self._gap) * np.maximum(np.abs(self._gap) - self._ramp_speed * dt_s, 0.0)
                return target - self._gap, np.zeros(self._count)
            return target, np.zeros(self._count)
        joy = cfg.joy
        if not self._buttons[joy.deadman_button]:
            return None
        axes = np.where(np.abs(self._axes) < joy.deadzone, 0.0, np.clip(self._axes, -1.0, 1.0))
        velocity = np.zeros(self._count)
        arm = list(cfg.arm_joint_indices)
        if joy.mode == "joint":
            for joint, axis in zip(arm, joy.joint_axes):
                if axis >= 0:
                    velocity[joint] = axes[axis] * joy.joint_speed_rad_s
        else:
            speeds = np.array([joy.linear_speed_m_s] * 3 + [joy.angular_speed_rad_s] * 3)
            twist = np.array([axes[a] if a >= 0 else 0.0 for a in joy.cartesian_axes]) * speeds
            if np.any(twist):
                q_arm = np.asarray(self._cartesian_step(position[arm], twist, dt_s), dtype=np.float64)
                if q_arm.shape == (len(arm),) and np.all(np.isfinite(q_arm)):
                    velocity[arm] = (q_arm - position[arm]) / dt_s
        target = position + velocity * dt_s
        if cfg.gripper_joint and self._gripper_goal is not None:
            g = cfg.joint_names.index(cfg.gripper_joint)
            target[g], velocity[g] = self._gripper_goal, 0.0
        return target, velocity

    def tick(self, now_ns: int, preview_steps: int = 0) -> TeleopTick:
        """The target to send now (None while IDLE) and `preview_steps` predicted next ones.

        The preview keeps the goal of this tick (a joy jog keeps its velocity) under the same limiter, so
        a chunk of [target, preview...] stays within the limits and a blending consumer lags less.
        """
        fresh = self._device_fresh(now_ns)
        if self._state is TeleopState.IDLE:
            return TeleopTick(None, self._state, fresh, np.zeros((0, self._count)))
        dt_s = 1.0 / self._cfg.rate_hz
        goal = None
        if self._state is not TeleopState.RELEASING and fresh:
            goal = self._device_goal(dt_s)
        if goal is None:  # released, stale or deadman up: brake to rest and stay there
            if self._stop_target is None:
                self._stop_target = self._stopping_point()
            goal = (self._stop_target, np.zeros(self._count))
        else:
            self._stop_target = None
        self._motion = limit_step(self._motion, goal[0], goal[1], self._limits, dt_s)
        target = self._motion.position_rad.copy()
        preview, motion, goal_target = np.zeros((preview_steps, self._count)), self._motion, goal[0]
        for k in range(preview_steps):
            goal_target = goal_target + goal[1] * dt_s
            motion = limit_step(motion, goal_target, goal[1], self._limits, dt_s)
            preview[k] = motion.position_rad
        if self._state is TeleopState.ENGAGING and fresh and not np.any(self._gap):
            driven = np.isfinite(self._leader_target)
            if np.all(np.abs(self._leader_target - target)[driven] <= self._cfg.engaged_tolerance_rad):
                self._state = TeleopState.ENGAGED
        elif self._state is TeleopState.RELEASING and self._motion.is_at_rest:
            self._state = TeleopState.IDLE  # this last target still goes out; then nothing
            self._motion = None
        return TeleopTick(target, self._state, fresh, preview)

    # ----------------------------------------------------------------------------- status
    def status(self) -> TeleopStatus:
        return TeleopStatus(self._state, self._cfg.device, self._engagements, dict(self._refused),
                            self._last_reason)
