"""SafetyConfig: defaults, cross-field rules with messages that name the field, YAML round trip."""

from __future__ import annotations

import pytest

from vla_ros.config import apply_changes, dump_params, from_flat, iter_fields, load_config
from vla_ros.config.safety import SafetyConfig
from vla_ros.errors import ConfigError


def test_defaults_are_valid_and_fit_the_simulated_arm() -> None:
    cfg = SafetyConfig()
    assert len(cfg.joint_names) == 7 and cfg.gripper.joint_name == "gripper"
    assert cfg.limits.position_min_rad[-1] == 0.0 and cfg.limits.position_max_rad[-1] == 1.0
    assert not cfg.start_armed


@pytest.mark.parametrize("field", ["position_min_rad", "position_max_rad", "max_velocity_rad_s",
                                   "max_acceleration_rad_s2"])
def test_per_joint_array_length_mismatch_names_the_field(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"limits\.{field}: has 6 values but joint_names has 7"):
        from_flat(SafetyConfig, {f"limits.{field}": [1.0] * 6})


def test_min_not_below_max_names_the_joint() -> None:
    with pytest.raises(ConfigError, match="joint 'joint_2' has min 1.0 >= max 1.0"):
        from_flat(SafetyConfig, {"limits.position_min_rad": [-1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 0.0],
                                 "limits.position_max_rad": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]})


def test_gripper_must_be_one_of_the_joints() -> None:
    with pytest.raises(ConfigError, match="gripper.joint_name: 'hand' is not in joint_names"):
        from_flat(SafetyConfig, {"gripper.joint_name": "hand"})
    assert from_flat(SafetyConfig, {"gripper.joint_name": ""}).gripper.joint_name == ""


def test_duplicate_joint_names_refused() -> None:
    with pytest.raises(ConfigError, match="joint_names: must be non-empty, unique"):
        from_flat(SafetyConfig, {"joint_names": ["a", "a"]})


@pytest.mark.parametrize("name,value,pattern", [
    ("limits.max_velocity_rad_s", [0.0] * 7, r"outside the allowed range"),
    ("blend.mode", "average", r"not one of"),
    ("control_rate_hz", 0.0, r"outside the allowed range"),
    ("hold_mode", "home", r"not one of"),
    ("output.points_per_command", 0, r"outside the allowed range"),
])
def test_ranges_and_choices_refused(name: str, value: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_flat(SafetyConfig, {name: value})


def test_direct_construction_cannot_divide_by_zero() -> None:
    with pytest.raises(ConfigError, match="control_rate_hz: must be a finite number > 0"):
        SafetyConfig(control_rate_hz=0.0)


def test_only_declared_dynamic_fields_change_live() -> None:
    cfg = SafetyConfig()
    changed = apply_changes(cfg, {"blend.mode": "crossfade", "control_rate_hz": 100.0})
    assert changed.blend.mode == "crossfade" and changed.control_rate_hz == 100.0
    with pytest.raises(ConfigError, match="restart required"):
        apply_changes(cfg, {"limits.max_step_rad": 0.1})
    dynamic = {f.name for f in iter_fields(SafetyConfig) if f.meta.dynamic}
    assert {"blend.mode", "blend.ensemble_decay", "blend.crossfade_s", "control_rate_hz"} <= dynamic


def test_yaml_round_trip(tmp_path) -> None:
    cfg = from_flat(SafetyConfig, {"blend.mode": "newest", "limits.max_step_rad": 0.02})
    path = tmp_path / "params.yaml"
    path.write_text(dump_params({"safety_node": cfg}))
    assert load_config(path, "safety_node", SafetyConfig) == cfg
