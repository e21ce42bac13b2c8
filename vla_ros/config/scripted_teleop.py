"""scripted_teleop_node parameters: a scripted sim expert played as a teleop device."""

from __future__ import annotations

import dataclasses

from vla_ros.config.schema import param
from vla_ros.config.sim import COMMAND_TYPES, SIM_JOINT_NAMES
from vla_ros.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ScriptedTeleopConfig:
    joint_names: tuple[str, ...] = param(SIM_JOINT_NAMES, "Joint order of the commands (the robot's order)")
    state_topic: str = param("/sim/state", "std_msgs/String JSON of the sim's ground-truth state (sim_robot_node)")
    result_topic: str = param("/sim/task_result", "std_msgs/String JSON task result (latched, sim_robot_node)")
    command_topic: str = param("/arm_controller/joint_trajectory", "Robot command output topic")
    command_type: str = param("joint_trajectory", "trajectory_msgs/JointTrajectory (one point, start now) or "
                              "std_msgs/Float64MultiArray (positions in joint_names order)", choices=COMMAND_TYPES)
    control_rate_hz: float = param(20.0, "Commands per second while a demonstration runs [Hz]",
                                   range=(1.0, 500.0))
    record: bool = param(True, "Start and stop a recorder episode around each demonstration "
                         "(/vla/recorder/start_episode, /vla/recorder/stop_episode)", dynamic=True)
    settle_s: float = param(0.5, "Hold the final target this long after the expert finishes, before the "
                            "recording stops (the last frames show the result) [s]", range=(0.0, 10.0),
                            dynamic=True)
    max_duration_s: float = param(30.0, "A demonstration that has not finished by then is stopped and kept "
                                  "as a failure [s]", range=(1.0, 600.0), dynamic=True)
    service_timeout_s: float = param(5.0, "How long to wait for the recorder's services and for a fresh "
                                     "sim state or task result [s]", range=(0.1, 120.0), dynamic=True)

    def __post_init__(self) -> None:
        names = self.joint_names
        if len(set(names)) != len(names) or set(names) != set(SIM_JOINT_NAMES):
            raise ConfigError(f"joint_names: {list(names)} must be a permutation of {list(SIM_JOINT_NAMES)}")
