"""SimConfig: defaults fit the sim, per-joint arrays and joint names checked, YAML round trip."""

from __future__ import annotations

import pytest

from vla_ros.config import dump_params, from_flat, load_config
from vla_ros.config.sim import SIM_JOINT_NAMES, SimConfig
from vla_ros.errors import ConfigError


def test_defaults_are_valid() -> None:
    cfg = SimConfig()
    assert cfg.joint_names == SIM_JOINT_NAMES
    assert (cfg.camera.height_px, cfg.camera.width_px) == (240, 320)
    assert cfg.camera.rate_hz >= 15.0
    assert cfg.command_type == "joint_trajectory"


def test_joint_names_may_be_reordered_but_not_changed() -> None:
    reordered = tuple(reversed(SIM_JOINT_NAMES))
    assert from_flat(SimConfig, {"joint_names": list(reordered),
                                 "initial_positions": [0.0] * 7}).joint_names == reordered
    with pytest.raises(ConfigError, match="joint_names: .* must be a permutation"):
        from_flat(SimConfig, {"joint_names": list(SIM_JOINT_NAMES[:6]) + ["hand"]})
    with pytest.raises(ConfigError, match="joint_names: .* must be a permutation"):
        from_flat(SimConfig, {"joint_names": list(SIM_JOINT_NAMES) + ["joint_1"]})


@pytest.mark.parametrize("field", ["initial_positions", "max_velocity_rad_s"])
def test_per_joint_array_length_mismatch_names_the_field(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field}: has 6 values, joint_names has 7"):
        from_flat(SimConfig, {field: [1.0] * 6})


@pytest.mark.parametrize("name,value,pattern", [
    ("task", "juggle", "not one of"),
    ("command_type", "twist", "not one of"),
    ("camera.rate_hz", 10.0, "outside the allowed range"),
    ("camera.name", "top", "not one of"),
    ("max_velocity_rad_s", [0.0] * 7, "outside the allowed range"),
    ("physics.timestep_s", 0.1, "outside the allowed range"),
    ("initial_positions", [0.0] * 6 + [1.5], "gripper value 1.5 must be in"),
])
def test_ranges_and_choices_refused(name: str, value: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_flat(SimConfig, {name: value})


def test_yaml_round_trip(tmp_path) -> None:
    cfg = from_flat(SimConfig, {"task": "write", "seed": 7, "camera.width_px": 160,
                                "command_type": "float64_array"})
    path = tmp_path / "params.yaml"
    path.write_text(dump_params({"sim_robot_node": cfg}))
    assert load_config(path, "sim_robot_node", SimConfig) == cfg
