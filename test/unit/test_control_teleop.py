"""TeleopController (vla_ros.control.teleop): leader mapping, Joy jog, engage/release, watchdog, refusals.

The property test drives any stream of device messages (sane, NaN, wrong sizes, unknown names, silence),
engage/disengage requests and joint states through the controller: every target (and every previewed
one) is finite, inside the position limits, and consecutive targets of a stream keep the velocity and
acceleration limits.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vla_ros.config.teleop import JoyConfig, LeaderConfig, TeleopConfig
from vla_ros.control.teleop import JoyEvent, Refusal, TeleopController, TeleopState, map_leader
from vla_ros.errors import ConfigError

MS = 1_000_000
NAMES = TeleopConfig().joint_names
HOME = np.array([0.0, 0.0, 1.65, 0.0, 1.49, 0.0, 0.0])
CFG = TeleopConfig()
DT_NS = round(1e9 / CFG.rate_hz)
VMAX = np.asarray(CFG.limits.max_velocity_rad_s)
AMAX = np.asarray(CFG.limits.max_acceleration_rad_s2)
LO, HI = np.asarray(CFG.limits.position_min_rad), np.asarray(CFG.limits.position_max_rad)


def joy_message(axes=(0.0,) * 6, pressed=()) -> tuple[list[float], list[int]]:
    buttons = [0] * 10
    for b in pressed:
        buttons[b] = 1
    return list(axes), buttons


class Checker:
    """Consecutive targets of one stream keep the limits (tolerances: float rounding only)."""

    def __init__(self) -> None:
        self.last: np.ndarray | None = None
        self.velocity = np.zeros(len(NAMES))

    def start(self, measured: np.ndarray) -> None:
        self.last, self.velocity = np.clip(measured, LO, HI), np.zeros(len(NAMES))

    def check(self, target: np.ndarray) -> None:
        assert np.all(np.isfinite(target)) and np.all(target >= LO) and np.all(target <= HI), target
        velocity = (target - self.last) * CFG.rate_hz
        assert np.all(np.abs(velocity) <= VMAX + 1e-9), velocity
        assert np.all(np.abs(velocity - self.velocity) * CFG.rate_hz <= AMAX + 1e-6)
        self.last, self.velocity = target, velocity


def test_leader_mapping_by_name_with_offset_and_scale() -> None:
    cfg = dataclasses.replace(CFG, leader=LeaderConfig(
        joint_names=("l6", "l5", "l4", "l3", "l2", "l1", ""), offsets_rad=(0.1,) + (0.0,) * 6,
        scales=(-1.0,) + (1.0,) * 6))
    targets, driven = map_leader(cfg, ["l1", "l2", "l3", "l4", "l5", "l6"], [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(targets[:6], [-6 + 0.1, 5, 4, 3, 2, 1])
    assert driven.tolist() == [True] * 6 + [False] and np.isnan(targets[6])


@pytest.mark.parametrize("names, positions, reason", [
    (list(NAMES), [0.0] * 6, Refusal.WRONG_SIZE),
    (list(NAMES), [0.0] * 6 + [float("nan")], Refusal.NON_FINITE),
    (list(NAMES) + ["elbow_extra"], [0.0] * 8, Refusal.UNKNOWN_NAME),
    (list(NAMES[:6]), [0.0] * 6, Refusal.MISSING_JOINT),
    (list(NAMES[:6]) + ["joint_1"], [0.0] * 7, Refusal.DUPLICATE_NAME),
])
def test_bad_leader_messages_are_refused_counted_and_no_sign_of_life(names, positions, reason) -> None:
    """Catches a NaN or misnamed leader message becoming a target, or keeping a dead device 'fresh'."""
    core = TeleopController(CFG)
    assert not core.offer_leader(names, positions, 0)
    assert core.status().refused == {reason: 1}
    core.update_joint_state(HOME, 0)
    ok, message = core.engage(True, 0)
    assert not ok and "leader" in message  # the refused message did not count as a live leader


@pytest.mark.parametrize("axes, buttons, reason", [
    ([0.0] * 3, [0] * 10, Refusal.WRONG_SIZE),  # fewer axes than the mapping uses
    ([0.0] * 6, [0] * 4, Refusal.WRONG_SIZE),  # fewer buttons than the mapping uses
    ([0.0, float("nan"), 0, 0, 0, 0], [0] * 10, Refusal.NON_FINITE),
])
def test_bad_joy_messages_are_refused_and_counted(axes, buttons, reason) -> None:
    core = TeleopController(dataclasses.replace(CFG, device="joy"))
    assert core.offer_joy(axes, buttons, 0) == []
    assert core.status().refused == {reason: 1}


def _engaged_leader(target: np.ndarray) -> TeleopController:
    core = TeleopController(CFG)
    core.update_joint_state(HOME, 0)
    core.offer_leader(list(NAMES), list(target), 0)
    return core


def test_engage_gate_refuses_a_far_leader_and_ramps_to_a_near_one() -> None:
    """Catches a follower jumping to a far leader at engage, or never reaching a near one."""
    far = HOME + [0.8, 0, 0, 0, 0, 0, 0]
    core = _engaged_leader(far)
    ok, message = core.engage(True, 0)
    assert not ok and "joint_1" in message and core.status().refused == {Refusal.ENGAGE_REFUSED: 1}
    near = HOME + [0.3, -0.2, 0, 0, 0, 0, 1.0]
    core = _engaged_leader(near)
    assert core.engage(True, 0)[0] and core.state is TeleopState.ENGAGING
    checker = Checker()
    checker.start(HOME)
    t = 0
    for _ in range(200):
        t += DT_NS
        core.offer_leader(list(NAMES), list(near), t)
        tick = core.tick(t)
        checker.check(tick.target)
        speed = np.abs(checker.velocity[:6]) / VMAX[:6]
        assert speed.max() <= CFG.engage_speed_ratio + 1e-9  # the ramp is slow
        if tick.state is TeleopState.ENGAGED:
            break
    assert core.state is TeleopState.ENGAGED
    np.testing.assert_allclose(tick.target, near, atol=CFG.engaged_tolerance_rad)


def test_stale_leader_brakes_to_rest_within_the_watchdog_and_release_ends_at_rest() -> None:
    """Catches teleop motion continuing after its device went silent."""
    start = HOME.copy()
    core = _engaged_leader(start)
    core.engage(True, 0)
    t, target = 0, start.copy()
    for k in range(40):  # leader moving joint_1 at 1 rad/s
        t += DT_NS
        target[0] = start[0] + 1.0 * k / CFG.rate_hz
        core.offer_leader(list(NAMES), list(target), t)
        moving = core.tick(t).target
    last_message = t
    targets = []
    while t - last_message < 2e9:
        t += DT_NS
        targets.append(core.tick(t).target)
    stale_after = int(np.ceil(CFG.device_timeout_s * CFG.rate_hz))
    braking_ticks = int(np.ceil(VMAX[0] / AMAX[0] * CFG.rate_hz)) + 2
    settled = targets[stale_after + braking_ticks]
    assert np.abs(targets[0] - moving).max() > 0  # it was still moving when the leader went silent
    for later in targets[stale_after + braking_ticks:]:
        np.testing.assert_array_equal(later, settled)
    assert core.engage(False, t)[0] and core.state is TeleopState.RELEASING
    t += DT_NS
    assert core.tick(t).state is TeleopState.IDLE and core.tick(t + DT_NS).target is None


def test_joy_joint_jog_needs_the_deadman_and_buttons_give_events() -> None:
    core = TeleopController(dataclasses.replace(CFG, device="joy"))
    core.update_joint_state(HOME, 0)
    axes = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    core.offer_joy(*joy_message(axes, pressed=[CFG.joy.engage_button]), 0)
    assert core.state is TeleopState.ENGAGED
    t = 0
    for _ in range(10):  # no deadman: no motion
        t += DT_NS
        core.offer_joy(*joy_message(axes), t)
        np.testing.assert_array_equal(core.tick(t).target, HOME)
    for _ in range(25):
        t += DT_NS
        core.offer_joy(*joy_message(axes, pressed=[CFG.joy.deadman_button, CFG.joy.gripper_close_button]), t)
        target = core.tick(t).target
    assert target[1] - HOME[1] > 0.5 * CFG.joy.joint_speed_rad_s * 0.9  # ~1 s of jog on joint_2 only
    np.testing.assert_array_equal(np.delete(target, [1, 6]), np.delete(HOME, [1, 6]))
    assert target[6] > 0.9  # gripper closed
    events = core.offer_joy(*joy_message(pressed=[CFG.joy.record_start_button, CFG.joy.success_button]), t)
    assert events == [JoyEvent.RECORD_START, JoyEvent.MARK_SUCCESS]
    assert core.offer_joy(*joy_message(pressed=[CFG.joy.record_start_button]), t) == []  # held: no new edge


def test_joy_cartesian_jog_goes_through_the_kinematics() -> None:
    from vla_ros.sim.kinematics import ArmKinematics

    kin = ArmKinematics()
    cfg = dataclasses.replace(CFG, device="joy", joy=JoyConfig(mode="cartesian"))
    with pytest.raises(ConfigError, match="kinematics"):
        TeleopController(cfg)
    core = TeleopController(cfg, kin.jog)
    core.update_joint_state(HOME, 0)
    core.engage(True, 0)
    t = 0
    for _ in range(25):  # +z at full speed for 1 s
        t += DT_NS
        core.offer_joy(*joy_message((0, 0, 1.0, 0, 0, 0), pressed=[CFG.joy.deadman_button]), t)
        target = core.tick(t).target
    start_pos, start_rot = kin.forward(HOME[:6])
    pos, rot = kin.forward(target[:6])
    assert 0.07 < pos[2] - start_pos[2] < 0.11 and np.abs(pos[:2] - start_pos[:2]).max() < 0.01
    assert np.abs(rot - start_rot).max() < 0.02


class TeleopMachine(RuleBasedStateMachine):
    """Random device streams, engage/disengage and silences against the limits."""

    @initialize(device=st.sampled_from(["leader", "joy"]))
    def setup(self, device: str) -> None:
        self.core = TeleopController(dataclasses.replace(CFG, device=device))
        self.device = device
        self.t = 0
        self.measured = HOME.copy()
        self.core.update_joint_state(self.measured, 0)
        self.checker = Checker()
        self.was_idle = True

    @rule(offsets=st.lists(st.floats(-3.0, 3.0), min_size=7, max_size=7),
          bad=st.sampled_from([None, "nan", "short", "unknown"]))
    def leader(self, offsets, bad) -> None:
        positions = list(self.measured + np.asarray(offsets))
        names = list(NAMES)
        if bad == "nan":
            positions[2] = float("nan")
        elif bad == "short":
            positions = positions[:5]
        elif bad == "unknown":
            names[0] = "wrist_9"
        self.core.offer_leader(names, positions, self.t)

    @rule(axes=st.lists(st.floats(-2.0, 2.0) | st.just(float("nan")), min_size=6, max_size=6),
          pressed=st.sets(st.integers(0, 9), max_size=4), short=st.booleans())
    def joy(self, axes, pressed, short) -> None:
        axes, buttons = joy_message(axes, pressed)
        self.core.offer_joy(axes[:3] if short else axes, buttons, self.t)

    @rule(on=st.booleans())
    def engage(self, on) -> None:
        self.core.engage(on, self.t)

    @rule(ticks=st.integers(1, 30), silent=st.booleans())
    def run(self, ticks, silent) -> None:
        for _ in range(ticks):
            self.t += DT_NS
            self.core.update_joint_state(self.measured, self.t)
            tick = self.core.tick(self.t, preview_steps=4)
            if tick.target is None:
                assert tick.state is TeleopState.IDLE
                self.was_idle = True
                continue
            if self.was_idle:  # a new stream starts at rest from the measured position
                self.checker.start(self.measured)
                self.was_idle = False
            self.checker.check(tick.target)
            preview = Checker()  # the preview goes to safety_node too: the same limits from this target on
            preview.last, preview.velocity = self.checker.last, self.checker.velocity
            for position in tick.preview:
                preview.check(position)
            self.measured = tick.target.copy()  # the arm follows
            if tick.state is TeleopState.IDLE:
                self.was_idle = True  # that was the stream's last target, sent at rest
                assert np.all(self.checker.velocity == 0)

    @invariant()
    def engaged_matches_state(self) -> None:
        if hasattr(self, "core"):
            assert self.core.engaged == (self.core.state is not TeleopState.IDLE)


TeleopMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
test_engage_and_release_never_leave_the_limits = TeleopMachine.TestCase
