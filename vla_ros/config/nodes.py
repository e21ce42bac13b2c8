"""The config class of every node, by node name (imported lazily: each pulls only its own module)."""

from __future__ import annotations

import importlib

NODE_CONFIGS = {
    "policy_node": ("vla_ros.config.policy", "PolicyNodeConfig"),
    "safety_node": ("vla_ros.config.safety", "SafetyConfig"),
    "recorder_node": ("vla_ros.config.recorder", "RecorderConfig"),
    "sim_robot_node": ("vla_ros.config.sim", "SimConfig"),
    "scripted_teleop_node": ("vla_ros.config.scripted_teleop", "ScriptedTeleopConfig"),
    "teleop_node": ("vla_ros.config.teleop", "TeleopConfig"),
}


def config_class(node: str) -> type:
    module, name = NODE_CONFIGS[node]
    return getattr(importlib.import_module(module), name)
