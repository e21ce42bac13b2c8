"""The typed config machinery: coercion, ranges, unknown keys, all-or-nothing changes, YAML."""

from __future__ import annotations

import dataclasses

import pytest

from vla_ros.config import apply_changes, dump_params, flatten, from_flat, load_config, param, section
from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Limits:
    max_velocity_rad_s: tuple[float, ...] = param((1.0, 2.0), "per joint", range=(0.0, 10.0))


@dataclasses.dataclass(frozen=True)
class Example:
    rate_hz: float = param(50.0, "rate", range=(1.0, 1000.0), dynamic=True)
    mode: str = param("a", "mode", choices=("a", "b"), dynamic=True)
    name: str = param("arm", "static")
    count: int = param(3, "count", range=(1, 10), dynamic=True)
    limits: Limits = section(Limits)

    def __post_init__(self) -> None:
        if self.count > len(self.limits.max_velocity_rad_s) + 5:
            raise ConfigError(f"count {self.count} too large for {len(self.limits.max_velocity_rad_s)} limits")


def test_from_flat_coerces_and_nests():
    cfg = from_flat(Example, {"rate_hz": 10, "limits.max_velocity_rad_s": [1, 2, 3]})
    assert cfg.rate_hz == 10.0 and isinstance(cfg.rate_hz, float)
    assert cfg.limits.max_velocity_rad_s == (1.0, 2.0, 3.0)
    assert flatten(cfg)["limits.max_velocity_rad_s"] == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("values,fragment", [
    ({"rate_hz": 0.0}, "outside the allowed range"),
    ({"rate_hz": float("nan")}, "finite"),
    ({"rate_hz": "fast"}, "expected a number"),
    ({"count": 2.5}, "expected an integer"),
    ({"count": True}, "expected an integer"),
    ({"mode": "c"}, "not one of"),
    ({"limits.max_velocity_rad_s": [1.0, 20.0]}, "limits.max_velocity_rad_s[1]"),
    ({"limits.max_velocity_rad_s": "1,2"}, "expected a list"),
    ({"rate_hz_typo": 1.0}, "valid:"),
    ({"count": 9}, "too large"),
])
def test_invalid_values_name_the_field(values, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        from_flat(Example, values)


def test_apply_changes_is_all_or_nothing():
    cfg = Example()
    new = apply_changes(cfg, {"rate_hz": 20.0, "mode": "b"})
    assert (new.rate_hz, new.mode) == (20.0, "b")
    with pytest.raises(ConfigError):
        apply_changes(cfg, {"rate_hz": 30.0, "mode": "nope"})
    assert cfg == Example()  # frozen: the old tree never changes


def test_static_fields_need_a_restart():
    with pytest.raises(ConfigError, match="restart required"):
        apply_changes(Example(), {"name": "other"})
    assert apply_changes(Example(), {"name": "arm"}).name == "arm"  # unchanged value is fine


def test_yaml_round_trip_and_wildcard(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(dump_params({"example_node": Example(rate_hz=25.0)}))
    assert load_config(path, "example_node", Example) == Example(rate_hz=25.0)
    path.write_text("/**:\n  ros__parameters:\n    rate_hz: 40.0\n"
                    "example_node:\n  ros__parameters:\n    limits:\n      max_velocity_rad_s: [3.0]\n")
    cfg = load_config(path, "example_node", Example)
    assert cfg.rate_hz == 40.0 and cfg.limits.max_velocity_rad_s == (3.0,)


@pytest.mark.parametrize("text,fragment", [
    ("[1, 2]", "mapping of node names"),
    ("example_node: {foo: 1}", "ros__parameters"),
    ("a: [", "not valid YAML"),
])
def test_bad_files_are_refused(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, "example_node", Example)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml", "x", Example)


def test_policy_config_rejects_duplicate_joints():
    with pytest.raises(ConfigError, match="unique"):
        PolicyNodeConfig(joint_names=("a", "a"))
