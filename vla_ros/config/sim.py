"""Config of sim_robot_node: the simulated arm, its camera and its ROS topics.

The arm's joint set is fixed by the scene (vla_ros/sim/scene.py); `joint_names` only chooses the
order in which joint states are published and commands are read. The gripper is a normalised
joint: 0 = fully open, 1 = fully closed.
"""

from __future__ import annotations

import dataclasses
import math

from vla_ros.config.schema import param, section
from vla_ros.errors import ConfigError

ARM_JOINT_NAMES = ("joint_1", "joint_2", "joint_3", "joint_4", "joint_5", "joint_6")
GRIPPER_JOINT_NAME = "gripper"
SIM_JOINT_NAMES = ARM_JOINT_NAMES + (GRIPPER_JOINT_NAME,)
SIM_TASKS = ("pour", "write")
COMMAND_TYPES = ("joint_trajectory", "float64_array")
CAMERA_NAMES = ("front", "wrist")

# Tool pointing down 0.30 m in front of the base, 0.32 m above the table (see sim/scene.py).
HOME_POSITIONS = (0.0, 0.0, 1.65, 0.0, 1.49, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    name: str = param("front", "Scene camera to publish: 'front' (fixed, third person) or 'wrist'",
                      choices=CAMERA_NAMES)
    width_px: int = param(320, "Image width [px]", range=(32, 1280))
    height_px: int = param(240, "Image height [px]", range=(32, 960))
    rate_hz: float = param(15.0, "Image publish rate [Hz]; the policy needs at least 15 Hz",
                           range=(15.0, 60.0))
    topic: str = param("/camera/image_raw", "sensor_msgs/Image (rgb8) output topic")
    frame_id: str = param("camera_front", "header.frame_id of the images")
    jpeg_quality: int = param(0, "Also publish <topic>/compressed (sensor_msgs/CompressedImage, JPEG at "
                              "this quality) as image_transport does, for a policy on another host; "
                              "0 = off", range=(0, 100))


@dataclasses.dataclass(frozen=True)
class PhysicsConfig:
    timestep_s: float = param(0.002, "MuJoCo physics step [s]; objects are simulated, the arm is "
                              "integrated kinematically at the same step", range=(0.0005, 0.01))
    real_time_factor: float = param(1.0, "Simulated seconds per wall-clock second (the node's pace)",
                                    range=(0.1, 10.0))


@dataclasses.dataclass(frozen=True)
class SimConfig:
    task: str = param("pour", "Task set up at the next reset: pour (cup into bowl) or write "
                      "(letter on paper)", choices=SIM_TASKS, dynamic=True)
    seed: int = param(0, "Seed of the next reset (object placement, letter)", range=(0, 2**31 - 1),
                      dynamic=True)
    joint_names: tuple[str, ...] = param(SIM_JOINT_NAMES, "Order of joints in joint states and "
                                         "commands; must be a permutation of the sim's 7 joints")
    initial_positions: tuple[float, ...] = param(HOME_POSITIONS, "Joint positions after a reset, in "
                                                 "joint_names order [rad; gripper 0 open .. 1 closed]")
    max_velocity_rad_s: tuple[float, ...] = param(
        (1.5, 1.5, 1.5, 2.5, 2.5, 3.0, 2.0), "Velocity limit per joint in joint_names order [rad/s; "
        "gripper: closure fraction per second]", range=(0.01, 10.0))
    joint_state_rate_hz: float = param(50.0, "/joint_states publish rate [Hz]", range=(1.0, 500.0))
    joint_state_topic: str = param("/joint_states", "sensor_msgs/JointState output topic")
    command_topic: str = param("/arm_controller/joint_trajectory", "Robot command input topic")
    command_type: str = param("joint_trajectory", "Message type on command_topic: "
                              "trajectory_msgs/JointTrajectory or std_msgs/Float64MultiArray "
                              "(positions in joint_names order)", choices=COMMAND_TYPES)
    result_topic: str = param("/sim/task_result", "std_msgs/String (JSON) with the task result")
    camera: CameraConfig = section(CameraConfig)
    physics: PhysicsConfig = section(PhysicsConfig)

    def __post_init__(self) -> None:
        names = self.joint_names
        if len(set(names)) != len(names) or set(names) != set(SIM_JOINT_NAMES):
            raise ConfigError(f"joint_names: {list(names)} must be a permutation of "
                              f"{list(SIM_JOINT_NAMES)}")
        for field in ("initial_positions", "max_velocity_rad_s"):
            values = getattr(self, field)
            if len(values) != len(names):
                raise ConfigError(f"{field}: has {len(values)} values, joint_names has {len(names)}")
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{field}: all values must be finite, got {list(values)}")
        if any(v <= 0.0 for v in self.max_velocity_rad_s):
            raise ConfigError(f"max_velocity_rad_s: must be > 0, got {list(self.max_velocity_rad_s)}")
        gripper = self.initial_positions[names.index(GRIPPER_JOINT_NAME)]
        if not 0.0 <= gripper <= 1.0:
            raise ConfigError(f"initial_positions: gripper value {gripper} must be in [0, 1]")
        if self.camera.rate_hz > 1.0 / self.physics.timestep_s:
            raise ConfigError(f"camera.rate_hz: {self.camera.rate_hz} Hz exceeds the physics rate "
                              f"{1.0 / self.physics.timestep_s:.0f} Hz")
