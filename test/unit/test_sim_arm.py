"""ArmSim: determinism, rendering, velocity-limited tracking, command refusal, grasping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.config import from_flat
from vla_ros.config.sim import SIM_JOINT_NAMES, SimConfig
from vla_ros.sim.arm_sim import ArmSim, CommandError

SMALL = {"camera.height_px": 96, "camera.width_px": 128}


@pytest.fixture(scope="module")
def sim():
    with ArmSim(from_flat(SimConfig, SMALL)) as arm:
        yield arm


def _count(image: np.ndarray, rgb_test) -> int:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(np.count_nonzero(rgb_test(r, g, b)))


def _red(r, g, b):
    return (r > 150) & (g < 80) & (b < 80)


def _blue(r, g, b):
    return (b > 150) & (r < 80) & (g < 120)


def _green(r, g, b):
    return (g > 130) & (r < 90) & (b < 100)


def _white(r, g, b):
    return (r > 220) & (g > 220) & (b > 220)


def test_render_has_configured_size_and_shows_the_task_objects(sim) -> None:
    sim.reset(seed=3, task="pour")
    image = sim.render()
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    assert _count(image, _red) > 20 and _count(image, _blue) > 50  # cup and bowl
    assert _count(image, _green) == 0
    sim.reset(seed=3, task="write")
    image = sim.render()
    assert _count(image, _white) > 100 and _count(image, _green) > 5  # paper and pen
    assert _count(image, _red) == 0 and _count(image, _blue) == 0  # pour objects parked out of view
    assert sim.render("wrist").shape == (96, 128, 3)
    with pytest.raises(CommandError, match="unknown camera 'top'"):
        sim.render("top")


def test_reset_is_deterministic_for_a_seed(sim) -> None:
    def rollout(arm: ArmSim, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        arm.reset(seed=seed, task="pour")
        arm.set_position_targets(arm.joint_positions() + [0.3, 0.2, -0.2, 0.1, 0.1, 0.1, 0.5])
        arm.step(0.3)
        state = arm.state()
        return arm.render(), state.joint_positions, {k: v[0] for k, v in state.object_poses.items()}

    first = rollout(sim, 5)
    with ArmSim(from_flat(SimConfig, SMALL)) as other:
        second = rollout(other, 5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    for name in first[2]:
        np.testing.assert_array_equal(first[2][name], second[2][name])
    third = rollout(sim, 6)
    assert not np.array_equal(first[2]["cup"], third[2]["cup"])
    assert not np.array_equal(first[0], third[0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fractions=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
       dt_s=st.floats(0.001, 0.2))
def test_joints_never_exceed_their_velocity_limit(sim, fractions, dt_s) -> None:
    sim.reset(seed=0, task="pour")
    lower, upper = sim.joint_limits()
    target = lower + np.asarray(fractions) * (upper - lower)
    before = sim.joint_positions()
    sim.set_position_targets(target)
    sim.step(dt_s)
    moved = np.abs(sim.joint_positions() - before)
    max_velocity = np.asarray(sim.config.max_velocity_rad_s)
    # whole physics steps: at most one step more than dt_s
    allowed = max_velocity * (dt_s + sim.model.opt.timestep) + 1e-9
    assert np.all(moved <= allowed), f"moved {moved} allowed {allowed}"
    assert np.all(np.abs(sim.joint_velocities()) <= max_velocity + 1e-9)
    # moving toward the target, never past it
    assert np.all(np.abs(target - sim.joint_positions()) <= np.abs(target - before) + 1e-12)


def test_target_is_reached_and_held(sim) -> None:
    sim.reset(seed=0, task="pour")
    target = sim.joint_positions() + [0.5, -0.3, 0.3, 0.4, -0.2, 0.6, 1.0]
    sim.set_position_targets(target)
    sim.step(1.0)  # 0.6 rad at >= 1.5 rad/s and the gripper at 2/s need well under 1 s
    np.testing.assert_allclose(sim.joint_positions(), target, atol=1e-12)
    np.testing.assert_allclose(sim.joint_velocities(), 0.0, atol=1e-12)


def test_trajectory_is_interpolated_from_the_current_position(sim) -> None:
    sim.reset(seed=0, task="pour")
    start = sim.joint_positions()
    mid = start + [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    end = start + [0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0]
    sim.set_trajectory([(0.5, mid), (1.0, end)])
    sim.step(0.25)
    np.testing.assert_allclose(sim.joint_positions(), start + [0.1, 0, 0, 0, 0, 0, 0], atol=1e-9)
    sim.step(0.5)
    np.testing.assert_allclose(sim.joint_positions(), start + [0.2, 0.1, 0, 0, 0, 0, 0], atol=1e-9)
    sim.step(0.5)
    np.testing.assert_allclose(sim.joint_positions(), end, atol=1e-12)


@pytest.mark.parametrize("command,pattern", [
    (np.zeros(6), r"expected 7 positions"),
    (np.array([np.nan, 0, 0, 0, 0, 0, 0]), r"joint_1 = nan is not within"),
    (np.array([0, 0, 0, 0, 0, 0, 1.5]), r"gripper = 1.5 is not within \[0.000, 1.000\]"),
    (np.array([0, 3.0, 0, 0, 0, 0, 0]), r"joint_2 = 3.0 is not within"),
])
def test_bad_targets_are_refused_and_change_nothing(sim, command, pattern) -> None:
    sim.reset(seed=0, task="pour")
    sim.set_position_targets(sim.joint_positions() + 0.1 * np.array([1, 1, 1, 1, 1, 1, 0]))
    with pytest.raises(CommandError, match=pattern):
        sim.set_position_targets(command)
    with pytest.raises(CommandError, match=pattern):
        sim.set_trajectory([(0.5, command)])
    before = sim.joint_positions()
    sim.step(0.05)
    assert np.all(sim.joint_positions()[:6] > before[:6])  # still tracking the previous target


def test_bad_trajectory_times_and_steps_are_refused(sim) -> None:
    q = sim.joint_positions()
    with pytest.raises(CommandError, match="strictly increasing"):
        sim.set_trajectory([(0.5, q), (0.5, q)])
    with pytest.raises(CommandError, match="has no points"):
        sim.set_trajectory([])
    for dt in (0.0, -1.0, float("nan"), "0.1"):
        with pytest.raises(CommandError, match="dt_s must be a finite number > 0"):
            sim.step(dt)


def test_joint_order_follows_the_config() -> None:
    names = tuple(reversed(SIM_JOINT_NAMES))  # gripper first
    cfg = from_flat(SimConfig, SMALL | {"joint_names": list(names),
                                        "initial_positions": list(reversed(SimConfig().initial_positions)),
                                        "max_velocity_rad_s": [2.0] * 7})
    with ArmSim(cfg) as arm:
        np.testing.assert_allclose(arm.joint_positions(), cfg.initial_positions)
        target = arm.joint_positions()
        target[0] = 1.0  # the gripper
        arm.set_position_targets(target)
        arm.step(1.0)
        q = arm.joint_positions()
        assert q[0] == 1.0 and np.allclose(q[1:], cfg.initial_positions[1:])
        assert arm.state().tcp_position[2] > 0.25  # the arm itself did not move


def test_closing_away_from_objects_grasps_nothing(sim) -> None:
    sim.reset(seed=0, task="pour")
    closed = sim.joint_positions()
    closed[6] = 1.0
    sim.set_position_targets(closed)
    sim.step(1.0)
    state = sim.state()
    assert state.grasped_object is None and not sim.task_result().details["cup_grasped"]


def test_write_sheet_shows_the_letter_to_trace() -> None:
    """The letter is drawn on the sheet (pencil grey), so the policy can see where to write."""
    with ArmSim(SimConfig()) as arm:  # full 240x320: the guide is a few pixels wide
        arm.reset(seed=1, task="write")
        image = arm.render().astype(int)
    ys, xs = np.nonzero(_white(image[..., 0], image[..., 1], image[..., 2]))
    sheet = image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    r, g, b = (sheet[..., i] for i in range(3))
    assert np.count_nonzero((r > 60) & (r < 200) & (np.abs(r - g) < 25) & (b >= r - 10)) > 8  # the grey letter
