"""teleop_node parameters: a leader arm or a gamepad/SpaceMouse (sensor_msgs/Joy) driving the robot
through safety_node, with engage/disengage ramps, a device watchdog and recording on buttons.

Per-joint arrays follow `joint_names` (the follower's joints, the order of the chunks teleop_node
publishes). The gripper (`gripper_joint`) is a normalised joint, 0 = open .. 1 = closed. Button and
axis numbers index sensor_msgs/Joy's `buttons` and `axes`; -1 switches a button or axis off.
"""

from __future__ import annotations

import dataclasses
import math

from vla_ros.config.schema import param, section
from vla_ros.config.sim import SIM_JOINT_NAMES
from vla_ros.errors import ConfigError

DEVICES = ("leader", "joy")
JOY_MODES = ("joint", "cartesian")
# Limits of the simulated arm (config/sim.yaml's safety_node); teleop moves at most this fast.
_POSITION_MIN = (-2.8, -1.8, -2.5, -2.8, -2.1, -2.8, 0.0)
_POSITION_MAX = (2.8, 1.8, 2.5, 2.8, 2.1, 2.8, 1.0)


@dataclasses.dataclass(frozen=True)
class TeleopLimitsConfig:
    position_min_rad: tuple[float, ...] = param(
        _POSITION_MIN, "Lowest target per joint [rad; gripper units]; safety_node's limits still apply after",
        range=(-1000.0, 1000.0))
    position_max_rad: tuple[float, ...] = param(
        _POSITION_MAX, "Highest target per joint [rad; gripper units]", range=(-1000.0, 1000.0))
    max_velocity_rad_s: tuple[float, ...] = param(
        (1.5, 1.5, 1.5, 2.5, 2.5, 3.0, 2.0), "Fastest teleop motion per joint [rad/s]", range=(1e-6, 1000.0))
    max_acceleration_rad_s2: tuple[float, ...] = param(
        (20.0,) * 7, "Acceleration limit per joint; also how hard a released or stale device brakes [rad/s^2]",
        range=(1e-6, 100000.0))


@dataclasses.dataclass(frozen=True)
class LeaderConfig:
    topic: str = param("/leader/joint_states", "sensor_msgs/JointState of the leader arm")
    joint_names: tuple[str, ...] = param(
        SIM_JOINT_NAMES, "Leader joint driving each follower joint (parallel to joint_names); '' = that "
        "follower joint keeps its position. A message must hold every named leader joint and no other")
    offsets_rad: tuple[float, ...] = param(
        (0.0,) * 7, "follower = scale * leader + offset, per follower joint [rad; gripper units]",
        range=(-1000.0, 1000.0))
    scales: tuple[float, ...] = param((1.0,) * 7, "Per follower joint (negative mirrors a joint)",
                                      range=(-100.0, 100.0))


@dataclasses.dataclass(frozen=True)
class JoyConfig:
    topic: str = param("/joy", "sensor_msgs/Joy of the gamepad or SpaceMouse (joy / spacenav drivers)")
    mode: str = param("joint", "joint: one axis per arm joint (joint_axes); cartesian: tool velocity "
                      "(cartesian_axes) through the arm's kinematics", choices=JOY_MODES, dynamic=True)
    joint_axes: tuple[int, ...] = param(
        (0, 1, 2, 3, 4, 5), "Joint jog: the axis moving each arm joint (joint_names order, gripper "
        "excluded); -1 = none", range=(-1, 63))
    joint_speed_rad_s: float = param(0.8, "Joint jog speed at full axis deflection [rad/s]",
                                     range=(0.0, 10.0), dynamic=True)
    cartesian_axes: tuple[int, ...] = param(
        (0, 1, 2, 3, 4, 5), "Cartesian jog: axes of tool linear x, y, z and angular x, y, z velocity in "
        "the base frame (a SpaceMouse's order); -1 = none", range=(-1, 63))
    linear_speed_m_s: float = param(0.1, "Cartesian jog speed at full deflection [m/s]", range=(0.0, 2.0),
                                    dynamic=True)
    angular_speed_rad_s: float = param(0.6, "Cartesian jog rotation speed at full deflection [rad/s]",
                                       range=(0.0, 10.0), dynamic=True)
    deadzone: float = param(0.05, "Axis values closer to 0 than this count as 0", range=(0.0, 0.9),
                            dynamic=True)
    deadman_button: int = param(4, "Held: the arm jogs; released: it brakes to rest (required)", range=(0, 63))
    gripper_close_button: int = param(0, "Pressed: the gripper closes (1.0)", range=(-1, 63))
    gripper_open_button: int = param(1, "Pressed: the gripper opens (0.0)", range=(-1, 63))
    engage_button: int = param(5, "Press: engage teleop if disengaged, disengage if engaged", range=(-1, 63))
    record_start_button: int = param(6, "Press: start a recorder episode", range=(-1, 63))
    record_stop_button: int = param(7, "Press: stop the episode and keep it (successful if marked)",
                                    range=(-1, 63))
    record_discard_button: int = param(8, "Press: stop the episode and discard it", range=(-1, 63))
    success_button: int = param(9, "Press: mark the running episode successful", range=(-1, 63))


@dataclasses.dataclass(frozen=True)
class TeleopConfig:
    device: str = param("leader", "leader: follow a leader arm's JointState; joy: jog with sensor_msgs/Joy",
                        choices=DEVICES)
    joint_names: tuple[str, ...] = param(SIM_JOINT_NAMES, "Follower joints, in the order of the chunks sent")
    gripper_joint: str = param("gripper", "The gripper among joint_names ('' = none): buttons drive it in "
                               "joy mode; Cartesian jog leaves it out")
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState of the follower (engaging starts "
                                    "from the measured position)")
    chunk_topic: str = param("/vla/action_chunk", "vla_ros_interfaces/ActionChunk output, read by safety_node "
                             "(teleop never commands the robot itself)")
    engaged_topic: str = param("/vla/teleop/engaged", "std_msgs/Bool (latched) out: true from engaging until "
                               "the arm is at rest after disengaging; policy_node pauses, the recorder marks "
                               "frames as intervention")
    engage_topic: str = param("/vla/teleop/engage", "std_msgs/Bool in: true engages, false disengages (a "
                              "pedal, or a supervising program); '' = off")
    rate_hz: float = param(25.0, "Chunks per second while engaged; the device is read at this rate [Hz]",
                           range=(1.0, 500.0))
    chunk_steps: int = param(5, "Steps per chunk: the target now, then the predicted next ones if the device "
                             "holds still; a chunk covers (steps - 1) periods, so safety_node does not run dry "
                             "when a chunk is late", range=(2, 50))
    device_timeout_s: float = param(0.25, "A device silent for this long counts as released: the arm brakes "
                                    "to rest [s]", range=(0.01, 10.0), dynamic=True)
    joint_state_timeout_s: float = param(0.5, "Engaging needs a measured joint state younger than this [s]",
                                         range=(0.01, 10.0), dynamic=True)
    engage_max_distance_rad: float = param(
        0.5, "Leader: engaging is refused when the mapped leader is farther than this from the follower "
        "on any arm joint (start-up gate) [rad]", range=(0.0, 10.0), dynamic=True)
    engage_speed_ratio: float = param(
        0.3, "While engaging, the follower ramps to the leader at this fraction of max_velocity_rad_s",
        range=(0.01, 1.0), dynamic=True)
    engaged_tolerance_rad: float = param(
        0.02, "Engaging ends (full speed) once every joint is this close to the leader [rad]",
        range=(1e-4, 1.0), dynamic=True)
    record_source: str = param("teleop", "source of episodes started from the device buttons",
                               choices=("teleop", "intervention", "scripted"))
    record_task: str = param("", "Task of episodes started from the buttons; '' = the recorder's "
                             "instruction topic or default_task")
    status_topic: str = param("/vla/teleop/status", "diagnostic_msgs/DiagnosticArray: state and refused "
                              "messages by reason")
    limits: TeleopLimitsConfig = section(TeleopLimitsConfig)
    leader: LeaderConfig = section(LeaderConfig)
    joy: JoyConfig = section(JoyConfig)

    def __post_init__(self) -> None:
        names = self.joint_names
        if not names or len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"joint_names: must be non-empty, unique and without blanks, got {list(names)}")
        if self.gripper_joint and self.gripper_joint not in names:
            raise ConfigError(f"gripper_joint: {self.gripper_joint!r} is not in joint_names {list(names)}")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ConfigError(f"rate_hz: must be > 0, got {self.rate_hz!r}")
        per_joint = [(f"limits.{f}", getattr(self.limits, f)) for f in
                     ("position_min_rad", "position_max_rad", "max_velocity_rad_s", "max_acceleration_rad_s2")]
        per_joint += [(f"leader.{f}", getattr(self.leader, f)) for f in ("joint_names", "offsets_rad", "scales")]
        for field, values in per_joint:
            if len(values) != len(names):
                raise ConfigError(f"{field}: has {len(values)} values but joint_names has {len(names)}")
        for name, low, high in zip(names, self.limits.position_min_rad, self.limits.position_max_rad):
            if not low < high:
                raise ConfigError(f"limits: joint {name!r} has min {low} >= max {high}")
        for field in ("max_velocity_rad_s", "max_acceleration_rad_s2"):
            if any(not (math.isfinite(v) and v > 0) for v in getattr(self.limits, field)):
                raise ConfigError(f"limits.{field}: every value must be > 0")
        leader_names = [n for n in self.leader.joint_names if n]
        if len(set(leader_names)) != len(leader_names):
            raise ConfigError(f"leader.joint_names: a leader joint may drive one follower joint only, got "
                              f"{list(self.leader.joint_names)}")
        arm_joints = len(names) - (1 if self.gripper_joint else 0)
        if len(self.joy.joint_axes) != arm_joints:
            raise ConfigError(f"joy.joint_axes: has {len(self.joy.joint_axes)} entries; give one per arm joint "
                              f"({arm_joints}: joint_names without the gripper)")
        if len(self.joy.cartesian_axes) != 6:
            raise ConfigError(f"joy.cartesian_axes: needs 6 entries (vx vy vz wx wy wz), got "
                              f"{len(self.joy.cartesian_axes)}")
        joy = self.joy
        buttons = {"deadman_button": joy.deadman_button, "gripper_close_button": joy.gripper_close_button,
                   "gripper_open_button": joy.gripper_open_button, "engage_button": joy.engage_button,
                   "record_start_button": joy.record_start_button, "record_stop_button": joy.record_stop_button,
                   "record_discard_button": joy.record_discard_button, "success_button": joy.success_button}
        used = [b for b in buttons.values() if b >= 0]
        if len(set(used)) != len(used):
            raise ConfigError(f"joy buttons: each button may have one role, got {buttons}")

    @property
    def arm_joint_indices(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.joint_names) if n != self.gripper_joint)
