"""NodeProcesses starts real child processes; VLA_ROS_POLICY_ENV hands policy_node to another checkout."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vla_ros.apps.processes import NodeProcesses, node_command


def _other_checkout(root: Path) -> Path:
    """A checkout whose env.sh puts a `python` first on PATH that reports how it was called."""
    (root / "bin").mkdir(parents=True)
    fake = root / "bin" / "python"
    fake.write_text('#!/bin/sh\necho "other python: $* PYTHONPATH=${PYTHONPATH:-unset} OTHER=$OTHER_ENV"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (root / "scripts").mkdir()
    (root / "scripts" / "env.sh").write_text(f'export PATH="{root}/bin:$PATH"\nexport OTHER_ENV=sourced\n')
    return root


def test_policy_node_runs_with_the_other_checkouts_environment(tmp_path):
    """Catches: policy_node started with this interpreter although VLA_ROS_POLICY_ENV names another
    checkout (CI's 3.12 run would then fail for lack of torch), or the other checkout's Python seeing
    this interpreter's PYTHONPATH (its packages are built for another Python version)."""
    other = _other_checkout(tmp_path / "other")
    env = dict(os.environ, VLA_ROS_POLICY_ENV=str(other), PYTHONPATH="/this/interpreters/paths")
    with NodeProcesses(tmp_path / "logs", env=env) as procs:
        procs.start("policy_node", params={"device": "cpu"}).wait(timeout=30)
    log = (tmp_path / "logs" / "policy_node.log").read_text().splitlines()
    assert log[0].startswith("# ") and str(other / "scripts" / "env.sh") in log[0], "the log names the command"
    assert log[1] == ("other python: -m vla_ros.ros.policy_node --ros-args -p device:=cpu "
                      "PYTHONPATH=unset OTHER=sourced")


def test_other_nodes_and_an_unset_variable_use_this_interpreter(tmp_path):
    """Catches: the override leaking to the nodes that must run here (sim, safety, recorder)."""
    other = _other_checkout(tmp_path / "other")
    assert node_command("safety_node", {"VLA_ROS_POLICY_ENV": str(other)}) == [sys.executable]
    assert node_command("policy_node", {}) == [sys.executable]


def test_a_checkout_without_env_sh_is_refused_by_name(tmp_path):
    """Catches: a typo in VLA_ROS_POLICY_ENV surfacing as a node that dies with bash's error."""
    with pytest.raises(FileNotFoundError, match="VLA_ROS_POLICY_ENV=.*scripts/env.sh"):
        node_command("policy_node", {"VLA_ROS_POLICY_ENV": str(tmp_path)})


_APP = """
import sys, time
from vla_ros.apps.processes import NodeProcesses
with NodeProcesses(sys.argv[1]) as procs:
    print(procs.start("safety_node").pid, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.parametrize("kill_signal", [signal.SIGTERM, signal.SIGKILL])
def test_an_app_killed_by_any_signal_leaves_no_node_behind(tmp_path, kill_signal):
    """Catches: nodes outliving the app that started them. They run in their own sessions (Ctrl-C in a
    terminal must not reach them before the app stops them), so `kill APP` (SIGTERM's default action skips
    every cleanup) or SIGKILL orphaned them all; an ablation stopped that way left 12 nodes running.
    SIGTERM must unwind like Ctrl-C (exit 143, nodes stopped by the app); SIGKILL must still take them down."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50))
    app = subprocess.Popen([sys.executable, "-c", _APP, str(tmp_path / "logs")], stdout=subprocess.PIPE,
                           env=env, text=True)
    node_pid = None
    try:
        node_pid = int(app.stdout.readline())
        log = tmp_path / "logs" / "safety_node.log"
        assert _wait_for(lambda: "ready:" in log.read_text(), 120), log.read_text()
        app.send_signal(kill_signal)
        code = app.wait(timeout=60)
        assert code == (143 if kill_signal == signal.SIGTERM else -signal.SIGKILL)
        assert _wait_for(lambda: not _alive(node_pid), 30), f"safety_node {node_pid} outlived the app"
    finally:
        if app.poll() is None:
            app.kill()
        if node_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node_pid, signal.SIGKILL)
