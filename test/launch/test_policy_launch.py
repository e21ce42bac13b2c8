"""The launch file under a real ROS 2 install (skips where launch_ros is not installed)."""

from __future__ import annotations

import pytest

launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; needs a ROS 2 install")


def test_launch_description_declares_arguments():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "launch" / "policy.launch.py"
    spec = importlib.util.spec_from_file_location("policy_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.entities if hasattr(a, "name") and hasattr(a, "default_value")}
    assert {"use_sim", "config_file", "checkpoint", "device", "record"} <= names
