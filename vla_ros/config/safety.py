"""safety_node parameters: chunk blending, joint limits, watchdog, start-up gate and command output.

Per-joint arrays follow `joint_names` order. The gripper (named by `gripper.joint_name`) is a
normalised joint, 0 = open .. 1 = closed: its entries in the `limits.*` arrays are in gripper units
(per second, per second squared) rather than radians. Defaults fit the simulated arm: position
limits sit 0.1 rad inside the sim's joint ranges (MoveIt Servo's joint_limit_margin idea).
"""

from __future__ import annotations

import dataclasses
import math

from vla_ros.config.sim import SIM_JOINT_NAMES
from vla_ros.config.schema import param, section
from vla_ros.errors import ConfigError

DEFAULT_JOINTS = SIM_JOINT_NAMES  # one source: the embedded simulated arm's joints (config/sim.py)
BLEND_MODES = ("newest", "temporal_ensemble", "crossfade")
OUTPUT_MODES = ("joint_trajectory", "float64_array")
HOLD_MODES = ("silent", "repeat")

# The sim's joint ranges (vla_ros/sim/scene.py) minus 0.1 rad; the gripper spans 0..1.
_DEFAULT_POSITION_MAX = (2.8, 1.8, 2.5, 2.8, 2.1, 2.8, 1.0)
_DEFAULT_POSITION_MIN = (-2.8, -1.8, -2.5, -2.8, -2.1, -2.8, 0.0)


@dataclasses.dataclass(frozen=True)
class BlendConfig:
    mode: str = param(
        "temporal_ensemble", "How overlapping chunks become one target: newest (the newest chunk "
        "only), temporal_ensemble (ACT's weighted mean of every chunk covering the instant) or "
        "crossfade (linear fade from the previous chunk to a new one over crossfade_s). A live change "
        "of any blend.* parameter is a stop, like a control_rate_hz change",
        choices=BLEND_MODES, dynamic=True)
    ensemble_decay: float = param(
        0.01, "ACT's m in w_i = exp(-m * i), i = 0 for the oldest chunk covering the instant: > 0 "
        "favours older chunks (ACT's choice, smoother), < 0 newer ones (more reactive), 0 = plain mean",
        range=(-5.0, 5.0), dynamic=True)
    crossfade_s: float = param(
        0.1, "Duration of the linear cross-fade after a chunk arrives [s]; 0 switches at once",
        range=(0.0, 5.0), dynamic=True)


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    position_min_rad: tuple[float, ...] = param(
        _DEFAULT_POSITION_MIN, "Lowest commanded position per joint [rad; gripper units]",
        range=(-1000.0, 1000.0))
    position_max_rad: tuple[float, ...] = param(
        _DEFAULT_POSITION_MAX, "Highest commanded position per joint [rad; gripper units]",
        range=(-1000.0, 1000.0))
    max_velocity_rad_s: tuple[float, ...] = param(
        (1.5,) * 7, "Velocity limit per joint between consecutive commands [rad/s]",
        range=(1e-6, 1000.0))
    max_acceleration_rad_s2: tuple[float, ...] = param(
        (6.0,) * 7, "Acceleration limit per joint over the last three commands [rad/s^2]; also the "
        "deceleration used to hold", range=(1e-6, 100000.0))
    max_step_rad: float = param(
        0.05, "Largest change of any joint between two on-time commands [rad per control period]: "
        "velocity <= max_step_rad * control_rate_hz; a command that leaves late under load may step "
        "proportionally farther (it is due proportionally later)", range=(1e-6, 10.0))
    urdf_path: str = param(
        "", "URDF whose <limit lower upper velocity> replace position_*_rad and max_velocity_rad_s "
        "for every arm joint (the gripper keeps the values above); '' = use the values above")


@dataclasses.dataclass(frozen=True)
class GripperConfig:
    joint_name: str = param(
        "gripper", "The gripper joint (0 = open .. 1 = closed); it is exempt from the URDF and from "
        "the start-up distance gate (its units are not radians); '' = no gripper")
    is_absolute_in_joint_delta: bool = param(
        True, "In the joint_delta action space the gripper action is an absolute position (true, "
        "the usual dataset convention) or a delta like the arm joints (false)")


@dataclasses.dataclass(frozen=True)
class WatchdogConfig:
    chunk_timeout_s: float = param(
        0.5, "Hold when no chunk was accepted for this long [s]", range=(0.01, 60.0), dynamic=True)
    joint_state_timeout_s: float = param(
        0.2, "Hold when no usable joint state was received for this long [s] (judged by receipt "
        "time on this node's clock, not by the robot's stamps); also the largest gap allowed between "
        "a joint_delta chunk's stamp and the joint state it is relative to",
        range=(0.005, 10.0), dynamic=True)
    max_stamp_skew_s: float = param(
        1.0, "A joint state stamped more than this before or after its receipt is refused and "
        "counted (the robot's clock disagrees with this node's; sync them, e.g. chrony); its stamp "
        "is never trusted [s]", range=(0.01, 60.0), dynamic=True)


@dataclasses.dataclass(frozen=True)
class EstopConfig:
    topic: str = param(
        "/vla/estop", "std_msgs/Bool e-stop input (true = pressed); heard from reliable and "
        "best-effort publishers, and a latched (transient-local) publisher's last message is "
        "received at start-up")
    heartbeat_timeout_s: float = param(
        0.0, "Heartbeat mode: hold (decelerate, drop the plan) while no message came on topic for "
        "this long, e.g. a deadman or wireless e-stop that publishes periodically [s]; 0 = off. Not "
        "latched: the next message lets a new run start through the start-up gate",
        range=(0.0, 60.0))


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    mode: str = param(
        "joint_trajectory", "Robot command message: trajectory_msgs/JointTrajectory "
        "(joint_trajectory_controller) or std_msgs/Float64MultiArray (forward_position_controller, "
        "positions in joint_names order)", choices=OUTPUT_MODES)
    topic: str = param("/arm_controller/joint_trajectory", "Robot command topic (used while armed)")
    dry_run_topic: str = param(
        "/vla/safety/dry_run_command", "Where commands go while disarmed (same message type as topic)")
    status_rate_hz: float = param(
        5.0, "diagnostic_msgs/DiagnosticArray publish rate on /vla/safety/status [Hz]", range=(0.1, 100.0))
    points_per_command: int = param(
        1, "JointTrajectory points per message: the command plus points_per_command - 1 previewed "
        "commands, point i at time_from_start (i + 1) / control_rate_hz; previews run the same "
        "limiter on the current plan", range=(1, 50))


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    joint_names: tuple[str, ...] = param(
        DEFAULT_JOINTS, "Commanded joints, in command order; chunks and joint states are matched "
        "by name")
    chunk_topic: str = param("/vla/action_chunk", "vla_ros_interfaces/ActionChunk input")
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState input")
    control_rate_hz: float = param(
        50.0, "Commands per second. Limits hold over the real spacing of consecutive commands. A live "
        "change is a stop: the plan is dropped, the arm decelerates within the limits and the next "
        "run starts at the new rate from the measured position", range=(1.0, 1000.0), dynamic=True)
    max_chunk_age_s: float = param(
        0.5, "A chunk whose observation stamp is older than this on arrival is dropped [s]",
        range=(0.001, 60.0), dynamic=True)
    startup_max_distance_rad: float = param(
        0.5, "A run whose first target is farther than this from the measured position (any arm "
        "joint) is refused; nearer ones are slewed to under the limits [rad]", range=(0.0, 10.0),
        dynamic=True)
    start_armed: bool = param(
        False, "Send commands to the robot from start-up (true) or to the dry-run topic until armed "
        "through /vla/safety/arm (false)")
    hold_mode: str = param(
        "silent", "After a hold has decelerated the arm to rest within the acceleration limit: stop "
        "sending (silent: the controller keeps its last target) or re-send the last command every "
        "tick (repeat)", choices=HOLD_MODES)
    blend: BlendConfig = section(BlendConfig)
    limits: LimitsConfig = section(LimitsConfig)
    gripper: GripperConfig = section(GripperConfig)
    watchdog: WatchdogConfig = section(WatchdogConfig)
    estop: EstopConfig = section(EstopConfig)
    output: OutputConfig = section(OutputConfig)

    def __post_init__(self) -> None:
        names = self.joint_names
        if not names or len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"joint_names: must be non-empty, unique and without blanks, got {list(names)}")
        if self.gripper.joint_name and self.gripper.joint_name not in names:
            raise ConfigError(f"gripper.joint_name: {self.gripper.joint_name!r} is not in joint_names "
                              f"{list(names)} ('' = no gripper)")
        # Ranges are checked when values come from YAML or ROS; these keep direct construction from
        # dividing by zero or freezing the arm.
        for field, value in (("control_rate_hz", self.control_rate_hz),
                             ("limits.max_step_rad", self.limits.max_step_rad)):
            if not (math.isfinite(value) and value > 0.0):
                raise ConfigError(f"{field}: must be a finite number > 0, got {value!r}")
        limits = self.limits
        for field in ("position_min_rad", "position_max_rad", "max_velocity_rad_s",
                      "max_acceleration_rad_s2"):
            values = getattr(limits, field)
            if len(values) != len(names):
                raise ConfigError(f"limits.{field}: has {len(values)} values but joint_names has "
                                  f"{len(names)}; give one value per joint")
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"limits.{field}: every value must be finite, got {list(values)}")
        for field in ("max_velocity_rad_s", "max_acceleration_rad_s2"):
            bad = [(n, v) for n, v in zip(names, getattr(limits, field)) if v <= 0.0]
            if bad:
                raise ConfigError(f"limits.{field}: must be > 0 for every joint, got {bad}")
        for name, low, high in zip(names, limits.position_min_rad, limits.position_max_rad):
            if not low < high:
                raise ConfigError(f"limits.position_min_rad/position_max_rad: joint {name!r} has min "
                                  f"{low} >= max {high}; min must be below max")
