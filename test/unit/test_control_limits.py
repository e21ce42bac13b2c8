"""Joint limits: URDF parsing, the exact braking bound, the limiter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.config import from_flat
from vla_ros.config.safety import SafetyConfig
from vla_ros.control.limits import (JointLimits, MotionState, braking_velocity_bound, limit_step,
                                    read_urdf_limits)
from vla_ros.errors import ConfigError

URDF = """<?xml version="1.0"?>
<robot name="arm">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/>
  <joint name="joint_1" type="revolute"><parent link="base"/><child link="l1"/>
    <limit lower="-1.25" upper="1.5" velocity="0.75" effort="10"/></joint>
  <joint name="joint_2" type="continuous"><parent link="l1"/><child link="l2"/>
    <limit velocity="2.5" effort="10"/></joint>
  <joint name="fixed_tool" type="fixed"><parent link="l2"/><child link="l3"/></joint>
  <joint name="joint_3" type="revolute"><parent link="l2"/><child link="l3"/>
    <limit upper="1.0" velocity="1.0" effort="10"/></joint>
</robot>
"""


def _stopping_distance(velocity: float, accel: float, dt: float) -> float:
    """Distance of this tick at `velocity` plus braking by accel*dt per tick to rest (simulated)."""
    distance, v = velocity * dt, velocity - accel * dt
    while v > 0:
        distance += v * dt
        v -= accel * dt
    return distance


@settings(max_examples=200, deadline=None)
@given(distance=st.floats(0.0, 10.0), accel=st.floats(0.1, 100.0), rate_hz=st.floats(5.0, 1000.0))
def test_braking_bound_is_exact(distance: float, accel: float, rate_hz: float) -> None:
    dt = 1.0 / rate_hz
    bound = float(braking_velocity_bound(np.array(distance), np.array(accel), dt))
    assert _stopping_distance(bound, accel, dt) <= distance + 1e-9
    # No larger velocity would still stop in time (the bound is not needlessly conservative).
    assert _stopping_distance(bound + 1e-6, accel, dt) > distance - 1e-9


def _limits(**overrides: object) -> JointLimits:
    flat = {"joint_names": ["a", "b"], "gripper.joint_name": "",
            "limits.position_min_rad": [-1.0, -1.0], "limits.position_max_rad": [1.0, 1.0],
            "limits.max_velocity_rad_s": [1.0, 1.0], "limits.max_acceleration_rad_s2": [5.0, 5.0],
            "limits.max_step_rad": 1.0}
    flat.update(overrides)
    return JointLimits.from_config(from_flat(SafetyConfig, flat))


def test_slew_to_a_far_target_stops_on_it_without_overshoot() -> None:
    limits, dt = _limits(), 0.02
    state, target = MotionState.at_rest(np.zeros(2)), np.array([0.6, -0.3])
    positions = []
    for _ in range(200):
        state = limit_step(state, target, np.zeros(2), limits, dt)
        positions.append(state.position_rad)
    positions = np.array(positions)
    assert np.all(positions[:, 0] <= 0.6 + 1e-12) and np.all(positions[:, 1] >= -0.3 - 1e-12)
    np.testing.assert_allclose(positions[-1], target, atol=1e-12)
    velocities = np.diff(np.vstack([np.zeros(2), positions]), axis=0) / dt
    assert np.abs(velocities).max() <= 1.0 + 1e-9
    assert np.abs(np.diff(np.vstack([np.zeros(2), velocities]), axis=0) / dt).max() <= 5.0 + 1e-6


def test_tracks_a_feasible_moving_target_without_lag() -> None:
    limits, dt = _limits(), 0.02
    times = np.arange(100) * dt
    plan = 0.5 * np.sin(times)[:, None] * np.array([1.0, -1.0])  # well inside every limit
    state = MotionState(plan[0], 0.5 * np.array([1.0, -1.0]))
    for k in range(1, 100):
        velocity = (plan[k] - plan[k - 1]) / dt
        state = limit_step(state, plan[k], velocity, limits, dt)
        np.testing.assert_allclose(state.position_rad, plan[k], atol=1e-12)


def test_max_step_caps_velocity_per_tick() -> None:
    limits = _limits(**{"limits.max_step_rad": 0.001})
    state = MotionState(np.zeros(2), np.full(2, 0.05))  # already at 0.05 rad/s = one max step at 50 Hz
    state = limit_step(state, np.ones(2), np.zeros(2), limits, 0.02)
    np.testing.assert_allclose(state.position_rad, [0.001, 0.001])


def test_config_limits_without_urdf() -> None:
    limits = JointLimits.from_config(SafetyConfig())
    assert limits.joint_names == SafetyConfig().joint_names
    assert limits.position_max_rad[2] == 2.5 and not limits.max_velocity_rad_s.flags.writeable


def test_urdf_limits_replace_position_and_velocity_of_arm_joints(tmp_path) -> None:
    path = tmp_path / "arm.urdf"
    path.write_text(URDF.replace('<limit upper="1.0"', '<limit lower="-0.5" upper="1.0"'))
    cfg = from_flat(SafetyConfig, {
        "joint_names": ["joint_1", "joint_2", "joint_3", "gripper"],
        "limits.position_min_rad": [-3.0, -3.0, -3.0, 0.0], "limits.position_max_rad": [3.0, 3.0, 3.0, 1.0],
        "limits.max_velocity_rad_s": [1.5] * 4, "limits.max_acceleration_rad_s2": [7.0] * 4,
        "limits.urdf_path": str(path)})
    limits = JointLimits.from_config(cfg)
    np.testing.assert_array_equal(limits.position_min_rad, [-1.25, -3.0, -0.5, 0.0])  # continuous: config
    np.testing.assert_array_equal(limits.position_max_rad, [1.5, 3.0, 1.0, 1.0])
    np.testing.assert_array_equal(limits.max_velocity_rad_s, [0.75, 2.5, 1.0, 1.5])  # gripper: config
    np.testing.assert_array_equal(limits.max_acceleration_rad_s2, [7.0] * 4)  # always from config


@pytest.mark.parametrize("joints,text,pattern", [
    (["joint_9"], URDF, r"joint 'joint_9' not found in .*arm.urdf; it has \['fixed_tool', 'joint_1'"),
    (["fixed_tool"], URDF, r"joint 'fixed_tool' .* is 'fixed'; expected revolute"),
    (["joint_3"], URDF, r"joint 'joint_3' .* needs <limit lower upper velocity>"),
    (["joint_1"], URDF.replace('velocity="0.75"', 'velocity="fast"'), r"non-numeric <limit>"),
    (["joint_1"], URDF.replace('velocity="0.75"', 'velocity="0"'), r"velocity > 0"),
    (["joint_1"], "<robot><joint", r"is not valid XML"),
])
def test_urdf_errors_name_file_joint_and_rule(tmp_path, joints: list[str], text: str, pattern: str) -> None:
    path = tmp_path / "arm.urdf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        read_urdf_limits(path, joints)


def test_missing_urdf_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"limits.urdf_path: .*nope.urdf not found"):
        read_urdf_limits(tmp_path / "nope.urdf", ["joint_1"])


def test_a_plan_cruising_into_a_position_limit_is_braked_in_time() -> None:
    """Tracking exactly would hit the limit at 0.9 rad/s; the stopping rule starts braking early."""
    limits, dt = _limits(), 0.02
    plan = np.minimum(np.arange(150) * dt * 0.9 - 0.5, 1.0)[:, None] * np.ones(2)  # saturates at max
    state = MotionState(plan[0], np.full(2, 0.9))
    positions, velocities = [plan[0]], [state.velocity_rad_s]
    for k in range(1, 150):
        state = limit_step(state, plan[k], (plan[k] - plan[k - 1]) / dt, limits, dt)
        positions.append(state.position_rad)
        velocities.append(state.velocity_rad_s)
    positions, velocities = np.array(positions), np.array(velocities)
    assert positions.max() <= 1.0
    np.testing.assert_allclose(positions[-1], [1.0, 1.0], atol=1e-12)
    assert np.abs(np.diff(velocities, axis=0) / dt).max() <= 5.0 + 1e-6
