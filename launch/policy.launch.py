"""Start policy_node, safety_node and recorder_node (and sim_robot_node with use_sim:=true).

    ros2 launch vla_ros policy.launch.py                       # simulated arm and camera
    ros2 launch vla_ros policy.launch.py use_sim:=false config_file:=/path/robot.yaml \
        checkpoint:=/path/to/checkpoint device:=cuda

Every parameter comes from the config file (ROS params format, one section per node). The
checkpoint and device arguments, when given, override policy_node's checkpoint_dir and device;
left empty, the config file's values apply. Without config_file, the package's config/sim.yaml
(use_sim:=true) or config/robot.yaml (use_sim:=false) is used. A config file that does not exist
or a boolean argument that is not a boolean stops the launch before any node starts, and so does a
config file without a section for a node it would start (or a '/**' section): a typo must never
start the nodes on their built-in defaults.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_ros.config.files import nodes_without_section

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
DEVICES = ("", "auto", "cpu", "cuda")


def _flag(context: LaunchContext, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context)
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ValueError(f"launch argument {name}:={value!r} is not a boolean; expected one of "
                     f"{list(TRUE_WORDS + FALSE_WORDS)}")


def _nodes(context: LaunchContext) -> list[Node]:
    use_sim = _flag(context, "use_sim")
    record = _flag(context, "record")
    config_file = LaunchConfiguration("config_file").perform(context)
    if not config_file:
        share = Path(get_package_share_directory("vla_ros"))
        config_file = str(share / "config" / ("sim.yaml" if use_sim else "robot.yaml"))
    elif not Path(config_file).expanduser().is_file():
        raise FileNotFoundError(f"launch argument config_file:={config_file!r} is not a file; expected a "
                                "ROS 2 params file with one section per node (see config/robot.yaml)")
    config_file = str(Path(config_file).expanduser())
    names = ["policy_node", "safety_node"] + (["recorder_node"] if record else [])
    names += ["sim_robot_node"] if use_sim else []
    missing = nodes_without_section(config_file, names)  # also refuses a file that is not a params file
    if missing:
        raise ValueError(f"config_file {config_file} has no section for {missing} (nor a '/**' one): those nodes "
                         "would start on their built-in defaults; add a '<node>: {ros__parameters: ...}' section")

    policy_overrides = {}
    device = LaunchConfiguration("device").perform(context)
    if device:
        policy_overrides["device"] = device
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        policy_overrides["checkpoint_dir"] = str(Path(checkpoint).expanduser())

    def node(name: str, overrides: dict | None = None) -> Node:
        # Later entries win: the launch arguments override the file.
        params = [config_file] + ([overrides] if overrides else [])
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
                              description="Checkpoint directory for policy_node (default: the config file's "
                                          "checkpoint_dir, else the shipped one)."),
        DeclareLaunchArgument("device", default_value="", choices=list(DEVICES),
                              description="auto, cpu or cuda for policy_node (default: the config file's device)."),
        DeclareLaunchArgument("record", default_value="true",
                              description="Start recorder_node so RunPolicy goals with record=true are saved."),
        OpaqueFunction(function=_nodes),
    ])
