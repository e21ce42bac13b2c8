"""Start policy_node, safety_node and recorder_node (and sim_robot_node with use_sim:=true).

    ros2 launch vla_ros policy.launch.py                       # simulated arm and camera
    ros2 launch vla_ros policy.launch.py use_sim:=false config_file:=/path/robot.yaml \
        checkpoint:=/path/to/checkpoint device:=cuda

Every parameter comes from the config file (ROS params format, one section per node); the
launch arguments override the checkpoint and device of policy_node. Without config_file, the
package's config/sim.yaml (use_sim:=true) or config/robot.yaml (use_sim:=false) is used.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

TRUE = ("true", "1", "yes")


def _nodes(context):
    share = Path(get_package_share_directory("vla_ros"))
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() in TRUE
    record = LaunchConfiguration("record").perform(context).lower() in TRUE
    config_file = LaunchConfiguration("config_file").perform(context) or str(
        share / "config" / ("sim.yaml" if use_sim else "robot.yaml"))
    policy_overrides = {"device": LaunchConfiguration("device").perform(context)}
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        policy_overrides["checkpoint_dir"] = checkpoint

    def node(name, extra=None):
        params = [config_file] + ([extra] if extra else [])
        return Node(package="vla_ros", executable=name, name=name, output="screen", parameters=params,
                    emulate_tty=True)

    nodes = [node("policy_node", policy_overrides), node("safety_node")]
    if record:
        nodes.append(node("recorder_node"))
    if use_sim:
        nodes.append(node("sim_robot_node"))
    return nodes


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="true",
                              description="Start the simulated arm and camera (sim_robot_node)."),
        DeclareLaunchArgument("config_file", default_value="",
                              description="ROS params file for all nodes (default: config/sim.yaml or robot.yaml)."),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Checkpoint directory for policy_node (default: the shipped one)."),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda."),
        DeclareLaunchArgument("record", default_value="true",
                              description="Start recorder_node so RunPolicy goals with record=true are saved."),
        OpaqueFunction(function=_nodes),
    ])
