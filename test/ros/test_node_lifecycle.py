"""Node processes: the installed entry points from a shell set up by scripts/env.sh alone, refusing to
start with one line, and the first SIGINT/SIGTERM ending a running goal with a result the client gets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from test.conftest import wait_for
from test.ros.sensors import SensorPublisher
from test.ros.test_policy_node import GoalClient
from vla_ros.config.recorder import RecorderConfig
from vla_ros.paths import default_checkpoint_dir
from vla_ros.recording import DatasetWriter, spec_from_config
from vla_ros_interfaces.action import RunPolicy

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = REPO / "install" / "vla_ros" / "lib" / "vla_ros"


def run_installed(node: str, *ros_args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """`install/vla_ros/lib/vla_ros/<node> --ros-args ...` (what `ros2 run` and `ros2 launch` execute) in a
    shell whose only set-up is `source scripts/env.sh`."""
    assert (ENTRY_POINTS / node).is_file(), f"{ENTRY_POINTS / node} missing: run bash scripts/setup.sh"
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/bin:/bin",
           "ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]}
    script = 'source scripts/env.sh && exec "$0" --ros-args "$@"'
    return subprocess.run(["bash", "-c", script, str(ENTRY_POINTS / node), *ros_args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def _dataset_at_30_fps(tmp_path: Path) -> list[str]:
    cfg = RecorderConfig(dataset_root=str(tmp_path / "ds"), fps=30, min_free_disk_mb=0)
    DatasetWriter(cfg.dataset_root, spec_from_config(cfg), cfg)
    return ["-p", f"dataset_root:={cfg.dataset_root}", "-p", "fps:=15", "-p", "min_free_disk_mb:=0"]


def _checkpoint_with_unreadable_weights(tmp_path: Path) -> list[str]:
    """The shipped checkpoint's config.json beside weights that cannot be loaded: a node that checks
    the contract first names the mismatch; one that loads the weights first fails on them."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(default_checkpoint_dir(), ckpt)
    (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    return ["-p", f"checkpoint_dir:={ckpt}", "-p", "image_height_px:=100", "-p", "device:=cpu"]


REFUSALS = {
    "sim_robot_node": (lambda tmp: ["-p", "task:=bogus"], "task: 'bogus' is not one of"),
    "recorder_node": (_dataset_at_30_fps, "was recorded with another layout"),
    "policy_node": (_checkpoint_with_unreadable_weights, "image size: policy expects"),
    "scripted_teleop_node": (lambda tmp: ["-p", "control_rate_hz:=0.5"], "control_rate_hz"),
}


@pytest.mark.parametrize("node", sorted(REFUSALS))
def test_installed_entry_point_refuses_to_start_with_one_line(node, tmp_path):
    """Bugs it catches: env.sh without vla_ros's install metadata (every installed entry point died with
    PackageNotFoundError: vla-ros); destroy_node of a half-built node printing an AttributeError
    traceback after the refusal; policy_node loading the weights before checking config.json."""
    make_args, reason = REFUSALS[node]
    result = run_installed(node, *make_args(tmp_path))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith(f"{node} cannot start: ") and reason in output, output


# The real runner and PolicyNode in a process of their own, with a test policy instead of a model.
_POLICY_PROCESS = """
from test.fakes import RampPolicy
from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.policy_node import PolicyNode
from vla_ros.ros.runner import run_node
config = PolicyNodeConfig(replan_period_s=0.05, observation_wait_s=5.0)
run_node("policy_node", lambda: PolicyNode(policy=RampPolicy(), config=config),
         lambda: MultiThreadedExecutor(num_threads=4))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_goal_aborts_it_with_a_result_the_client_receives(ros, tmp_path, sig):
    """Bug it catches: Ctrl-C destroyed the node under the running goal (InvalidHandle from the chunk
    publish, 'Goal state not set, assuming aborted') and the action client never got a result."""
    log_path = tmp_path / "policy_node.log"
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_POLICY_PROCESS)], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        # A server of an earlier test can linger in DDS discovery: wait for this one to be up.
        wait_for(lambda: "ready:" in log_path.read_text(), timeout_s=60, what="policy_node process ready")
        client = GoalClient(ros)
        with SensorPublisher(ros.node("sensors")):
            handle = client.send(instruction="keep going")  # no limit: only the signal ends it
            assert handle.accepted
            done = threading.Event()
            holder = {}

            def on_result(future):
                holder["result"] = future.result()
                done.set()

            handle.get_result_async().add_done_callback(on_result)
            # a second of chunks: the result service of a just-created client needs its DDS discovery too
            wait_for(lambda: len(client.chunks) >= 20, timeout_s=30, what="20 chunks from the goal")
            process.send_signal(sig)
            assert done.wait(30), "no result after the signal: " + log_path.read_text()
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = holder["result"]
    assert result.status == 6  # action_msgs/GoalStatus.STATUS_ABORTED
    assert result.result.outcome == RunPolicy.Result.OUTCOME_ABORTED
    assert result.result.reason == "node shutting down" and result.result.chunk_count >= 20
    text = log_path.read_text()
    assert "Traceback" not in text and "InvalidHandle" not in text and "Goal state not set" not in text, text


def test_params_file_without_the_nodes_section_warns(tmp_path):
    """Bug it catches: a params file with no section for the node (e.g. a misspelt node name) started
    it on built-in defaults without a word."""
    params = tmp_path / "params.yaml"
    params.write_text("saftey_node:\n  ros__parameters:\n    control_rate_hz: 20.0\n")
    env = dict(os.environ)
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "vla_ros.ros.safety_node", "--ros-args", "--params-file",
                                    str(params)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready:" in (tmp_path / "log").read_text(), timeout_s=60, what="safety_node ready")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = (tmp_path / "log").read_text()
    assert f"no parameters for /safety_node in ['{params}']" in text and "built-in default" in text, text


def test_wrong_parameter_type_is_answered_with_type_names(ros):
    """Bug it catches: rclpy's own check answered a string for a float with "Wrong parameter type,
    expected '3' got '4'"; an integer for a float (`ros2 param set ... 40`) was refused the same way."""
    from rclpy.parameter import Parameter

    from vla_ros.ros.safety_node import SafetyNode

    node = ros.add(SafetyNode(context=ros.context))
    (refused,) = node.set_parameters([Parameter("control_rate_hz", Parameter.Type.STRING, "fast")])
    assert not refused.successful and refused.reason == "control_rate_hz: expected a number, got 'fast'"
    (accepted,) = node.set_parameters([Parameter("control_rate_hz", Parameter.Type.INTEGER, 40)])
    assert accepted.successful and node._params.current.control_rate_hz == 40.0
    (refused,) = node.set_parameters([Parameter("blend.mode", Parameter.Type.INTEGER, 1)])
    assert not refused.successful and "blend.mode: expected a string, got 1" == refused.reason
