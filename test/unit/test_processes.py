"""NodeProcesses starts real child processes; VLA_ROS_POLICY_ENV hands policy_node to another checkout."""

from __future__ import annotations

import os
import stat
import sys
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
