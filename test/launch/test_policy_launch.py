"""launch/policy.launch.py under a real ROS 2 launch stack (skips where launch_ros is not installed).

Two levels: the description is evaluated in a LaunchContext for both use_sim values (which nodes,
which executables, which bad arguments stop the launch), and the whole file is launched in a
subprocess (LaunchService) against the colcon-installed vla_ros, then inspected over DDS: all four
nodes, the action server, the parameters from the config file and the launch arguments, a dynamic
parameter change applied and an out-of-range one refused.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; needs a ROS 2 install")

from launch import LaunchContext, LaunchDescription  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

from test.conftest import wait_for  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "policy.launch.py"
CONFIG_DIR = LAUNCH_FILE.parents[1] / "config"
ALL_NODES = {"policy_node", "safety_node", "recorder_node", "sim_robot_node"}

# Runs the launch file the way `ros2 launch vla_ros policy.launch.py name:=value ...` does.
RUN_LAUNCH = """
import signal
import sys
# A shell's background job starts with SIGINT ignored; Ctrl-C (the test's SIGINT) must reach launch.
signal.signal(signal.SIGINT, signal.default_int_handler)
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
path, *arguments = sys.argv[1:]
service = LaunchService()
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[a.split(":=", 1) for a in arguments]))
sys.exit(service.run())
"""


def _description() -> LaunchDescription:
    spec = importlib.util.spec_from_file_location("policy_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _evaluate(arguments: dict[str, str]) -> list[Node]:
    """The Node actions the description produces for these launch arguments (nothing is started)."""
    context = LaunchContext()
    context.launch_configurations.update(arguments)
    nodes: list[Node] = []
    for entity in _description().entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)  # fills defaults, checks choices
        elif isinstance(entity, OpaqueFunction):
            nodes.extend(entity.execute(context))
    return nodes


def _vla_ros_installed() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("vla_ros"))
    except PackageNotFoundError:
        return False
    return (prefix / "lib" / "vla_ros" / "policy_node").is_file()


def test_description_declares_arguments():
    names = {e.name for e in _description().entities if isinstance(e, DeclareLaunchArgument)}
    assert names == {"use_sim", "config_file", "checkpoint", "device", "record"}


@pytest.mark.parametrize("use_sim, expected", [
    ("true", ALL_NODES),
    ("false", ALL_NODES - {"sim_robot_node"}),
])
def test_use_sim_selects_the_nodes(use_sim, expected, tmp_path):
    config = tmp_path / "sim.yaml"  # a section for every node (robot.yaml has none for sim_robot_node)
    shutil.copy(CONFIG_DIR / "sim.yaml", config)
    nodes = _evaluate({"use_sim": use_sim, "config_file": str(config)})
    assert all(isinstance(n, Node) and n.node_package == "vla_ros" for n in nodes)
    assert {n.node_executable for n in nodes} == expected


def test_config_without_a_section_for_a_started_node_stops_the_launch(tmp_path):
    """Bug it catches: the docstring promised never to start nodes on their built-in defaults, yet a
    config file without a node's section (here robot.yaml with use_sim:=true) started it on them."""
    config = tmp_path / "robot.yaml"
    shutil.copy(CONFIG_DIR / "robot.yaml", config)
    with pytest.raises(ValueError, match=r"no section for \['sim_robot_node'\]"):
        _evaluate({"use_sim": "true", "config_file": str(config)})


def test_record_false_leaves_out_the_recorder(tmp_path):
    config = tmp_path / "sim.yaml"
    shutil.copy(CONFIG_DIR / "sim.yaml", config)
    nodes = _evaluate({"record": "false", "config_file": str(config)})
    assert {n.node_executable for n in nodes} == ALL_NODES - {"recorder_node"}


@pytest.mark.parametrize("arguments, error, words", [
    ({"config_file": "/no/such/robot.yaml"}, FileNotFoundError, "config_file"),
    ({"use_sim": "flase"}, ValueError, "use_sim"),
    ({"record": "maybe"}, ValueError, "record"),
    ({"device": "gpu"}, Exception, "device"),
])
def test_bad_arguments_stop_the_launch(arguments, error, words):
    with pytest.raises(error, match=words):
        _evaluate(arguments)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    from vla_ros.model.checkpoint import create_random_checkpoint

    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random")


def _get(client, name: str):
    future = client.get_parameters([name])
    wait_for(future.done, 10.0, f"{name} from get_parameters")
    [value] = future.result().values
    return value


def _set(client, name: str, value: float):
    from rclpy.parameter import Parameter

    future = client.set_parameters([Parameter(name, value=value)])
    wait_for(future.done, 10.0, f"set_parameters {name}={value}")
    [result] = future.result().results
    return result


def test_launch_brings_up_the_sim_system(ros, tmp_path, checkpoint_dir):
    if not _vla_ros_installed():
        pytest.skip("vla_ros is not colcon-installed in AMENT_PREFIX_PATH (lib/vla_ros/policy_node)")
    from rclpy.action import get_action_names_and_types
    from rclpy.parameter_client import AsyncParameterClient

    # The file sets device (a launch argument left empty must not override it); the
    # checkpoint comes from the launch argument; datasets go to tmp_path.
    config = yaml.safe_load((CONFIG_DIR / "sim.yaml").read_text())
    config["policy_node"]["ros__parameters"]["device"] = "cpu"
    config["recorder_node"]["ros__parameters"]["dataset_root"] = str(tmp_path / "datasets")
    config_file = tmp_path / "sim.yaml"
    config_file.write_text(yaml.safe_dump(config))

    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launch = subprocess.Popen(
            [sys.executable, "-c", RUN_LAUNCH, str(LAUNCH_FILE), "use_sim:=true",
             f"config_file:={config_file}", f"checkpoint:={checkpoint_dir}"],
            env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        helper = ros.node("launch_probe")

        def running() -> set[str]:
            assert launch.poll() is None, f"launch exited early:\n{log_path.read_text()[-3000:]}"
            return {name for name, namespace in helper.get_node_names_and_namespaces() if namespace == "/"}

        wait_for(lambda: ALL_NODES <= running(), 120.0, f"nodes {sorted(ALL_NODES)}")
        wait_for(lambda: any(name == "/vla/run_policy" for name, _ in get_action_names_and_types(helper)),
                 60.0, "the /vla/run_policy action server (policy_node loads its checkpoint)")

        policy = AsyncParameterClient(helper, "policy_node")
        assert policy.wait_for_services(10.0)
        assert _get(policy, "device").string_value == "cpu"
        assert _get(policy, "checkpoint_dir").string_value == str(checkpoint_dir)
        assert _get(policy, "keep_ratio").double_value == 0.0  # the checkpoint's own ratio
        assert _set(policy, "keep_ratio", 0.3).successful
        assert _get(policy, "keep_ratio").double_value == 0.3
        refused = _set(policy, "keep_ratio", 2.0)
        assert not refused.successful and "keep_ratio" in refused.reason
        assert _get(policy, "keep_ratio").double_value == 0.3

        safety = AsyncParameterClient(helper, "safety_node")
        assert safety.wait_for_services(10.0)
        assert _get(safety, "start_armed").bool_value is True  # from sim.yaml; robot.yaml starts disarmed

        launch.send_signal(signal.SIGINT)  # as Ctrl-C does: launch stops every node, then exits
        launch.wait(timeout=60)
        wait_for(lambda: not _group_alive(launch.pid), 30.0, "every launched node to exit")
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        if _group_alive(launch.pid):  # the nodes share the launch's session: none may outlive the test
            os.killpg(launch.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
