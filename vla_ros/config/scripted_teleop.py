"""scripted_teleop_node parameters: a scripted sim expert played as a teleop device."""

from __future__ import annotations

import dataclasses

from vla_ros.config.schema import param
from vla_ros.config.sim import COMMAND_TYPES, SIM_JOINT_NAMES
from vla_ros.errors import ConfigError

DEVICES = ("command", "leader", "joy")


@dataclasses.dataclass(frozen=True)
class ScriptedTeleopConfig:
    joint_names: tuple[str, ...] = param(SIM_JOINT_NAMES, "Joint order of the commands (the robot's order)")
    state_topic: str = param("/sim/state", "std_msgs/String JSON of the sim's ground-truth state (sim_robot_node)")
    result_topic: str = param("/sim/task_result", "std_msgs/String JSON task result (latched, sim_robot_node)")
    command_topic: str = param("/arm_controller/joint_trajectory", "Robot command output topic")
    command_type: str = param("joint_trajectory", "trajectory_msgs/JointTrajectory (one point, start now) or "
                              "std_msgs/Float64MultiArray (positions in joint_names order)", choices=COMMAND_TYPES)
    device: str = param("command", "How the expert drives the arm: command (robot commands on command_topic "
                        "directly, the plain demonstration), leader (a simulated leader arm: JointState on "
                        "leader_topic for teleop_node) or joy (a simulated gamepad: sensor_msgs/Joy joint jog "
                        "on joy_topic for teleop_node, deadman held, gripper and engage buttons as "
                        "teleop_node's defaults); with leader and joy, teleop is engaged on engage_topic for "
                        "each demonstration", choices=DEVICES)
    leader_topic: str = param("/leader/joint_states", "Simulated leader output (device leader)")
    joy_topic: str = param("/joy", "Simulated gamepad output (device joy)")
    engage_topic: str = param("/vla/teleop/engage", "std_msgs/Bool to teleop_node (devices leader and joy)")
    joy_full_scale_rad_s: float = param(2.0, "Joint speed of a fully deflected axis; must equal teleop_node's "
                                        "joy.joint_speed_rad_s [rad/s]", range=(0.01, 10.0))
    joy_gain_per_s: float = param(1.0, "Joy: axis = (expert velocity + gain * (expert target - measured)) / "
                                  "full scale [1/s]", range=(0.0, 100.0))
    catch_up_rad: float = param(0.1, "Devices leader and joy: the expert's plan waits while any joint (the gripper unless it holds an object) is "
                                "farther than this from its last target [rad]", range=(0.001, 10.0), dynamic=True)
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
