"""Import contracts: pure layers never import ROS; control/ never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vla_ros"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "trajectory_msgs", "diagnostic_msgs",
               "builtin_interfaces", "rcl_interfaces", "vla_ros_interfaces", "vla_ros.ros", "launch",
               "launch_ros", "ament_index_python")
PURE = ["model", "control", "recording", "training", "sim", "config", "types.py", "errors.py",
        "observation.py"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(part: str) -> list[Path]:
    target = PKG / part
    return sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else []


@pytest.mark.parametrize("part", PURE)
def test_pure_layers_import_no_ros(part):
    for path in _files(part):
        bad = {n for n in _imports(path) if any(n == m or n.startswith(m + ".") for m in ROS_MODULES)}
        assert not bad, f"{path.relative_to(PKG.parent)} imports ROS modules {sorted(bad)}"


def test_control_imports_no_torch():
    for path in _files("control"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("torch", "transformers")}
        assert not bad, f"{path.relative_to(PKG.parent)} imports {sorted(bad)}"
