"""The shipped config files load into every node's config, and the parameter docs are current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vla_ros.config import load_config, read_params_file
from vla_ros.config.__main__ import markdown
from vla_ros.config.nodes import NODE_CONFIGS, config_class

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["sim.yaml", "robot.yaml"])
def test_config_files_load(name):
    path = ROOT / "config" / name
    nodes = read_params_file(path)
    assert set(nodes) <= set(NODE_CONFIGS), f"unknown node sections in {name}: {set(nodes) - set(NODE_CONFIGS)}"
    for node in nodes:
        load_config(path, node, config_class(node))


def test_robot_config_starts_disarmed_and_sim_armed():
    assert load_config(ROOT / "config" / "robot.yaml", "safety_node", config_class("safety_node")).start_armed is False
    assert load_config(ROOT / "config" / "sim.yaml", "safety_node", config_class("safety_node")).start_armed is True


def test_parameter_docs_are_current():
    doc = ROOT / "docs" / "parameters.md"
    assert doc.exists() and doc.read_text() == markdown(), \
        "docs/parameters.md is stale: run `python -m vla_ros.config --markdown docs/parameters.md`"


def test_params_file_without_a_node_section_is_named(tmp_path):
    """Bug it catches: the launch file promised never to start nodes on built-in defaults, yet a
    config file with no section for a node (a typo in its name) started it silently."""
    from vla_ros.config.files import nodes_without_section

    path = tmp_path / "p.yaml"
    path.write_text("policy_node:\n  ros__parameters: {device: cpu}\nsaftey_node:\n  ros__parameters: {}\n")
    assert nodes_without_section(path, ["policy_node", "safety_node", "recorder_node"]) == ["safety_node",
                                                                                         "recorder_node"]
    path.write_text("/**:\n  ros__parameters: {}\n")
    assert nodes_without_section(path, ["policy_node"]) == []
    for name in ("sim.yaml", "robot.yaml"):  # the shipped files the launch file falls back to
        assert nodes_without_section(ROOT / "config" / name, ["policy_node", "safety_node", "recorder_node"]) == []


@pytest.mark.parametrize("name", ["sim.yaml", "robot.yaml"])
def test_every_node_of_a_params_file_names_the_same_joints(name):
    """Bug caught: one node's joint list edited and another's not (policy state order vs safety limits vs
    recorder columns silently disagree). The joints come from the config tree; each file states them once
    per node, and all must be the same list in the same order."""
    path = ROOT / "config" / name
    joints = {node: tuple(load_config(path, node, config_class(node)).joint_names)
              for node in read_params_file(path)
              if "joint_names" in {f.name for f in dataclasses.fields(config_class(node))}}
    assert len(joints) >= 3 and len(set(joints.values())) == 1, joints
