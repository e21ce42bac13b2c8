"""SafetyController examples: each refusal reason, start-up gate, watchdog, e-stop, arming, status."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.config import apply_changes, from_flat
from vla_ros.config.safety import SafetyConfig
from vla_ros.control.safety import ChunkRejection, SafetyController, TickResult
from vla_ros.control.watchdog import HoldReason, WatchdogState
from vla_ros.errors import ConfigError
from vla_ros.types import ActionChunk

MS = 1_000_000
JOINTS = SafetyConfig().joint_names
HOME = np.array([0.0, -0.12, 2.11, 0.0, 1.15, 0.0, 0.0])


class Rig:
    """A controller driven on a simulated clock; the arm follows every command exactly."""

    def __init__(self, **flat: object) -> None:
        self.cfg = from_flat(SafetyConfig, flat)
        self.ctl = SafetyController(self.cfg)
        self.now_ns = 1_000 * MS
        self.measured = HOME.copy()
        self.ctl.update_joint_state(self.measured, self.now_ns, received_ns=self.now_ns)

    def chunk(self, rows: np.ndarray, *, age_s: float = 0.0, dt_s: float = 0.1, chunk_id: int = 1,
              space: str = "joint_position", names: tuple[str, ...] = JOINTS):
        chunk = ActionChunk(chunk_id, self.now_ns - round(age_s * 1e9), space, names, dt_s,
                            np.asarray(rows, dtype=np.float64))
        return self.ctl.add_chunk(chunk, self.now_ns)

    def tick(self, *, joint_state: bool = True, follow: bool = True) -> TickResult:
        self.now_ns += 20 * MS
        if joint_state:
            self.ctl.update_joint_state(self.measured, self.now_ns, received_ns=self.now_ns)
        result = self.ctl.tick(self.now_ns)
        if follow and result.command is not None:
            self.measured = result.command.copy()
        return result


def _steady(offset: np.ndarray | float = 0.0, horizon: int = 10) -> np.ndarray:
    return np.tile(HOME + offset, (horizon, 1))  # (H, J)


@pytest.mark.parametrize("mutate,reason", [
    (lambda r: r.chunk(_steady(), space="ee_delta"), ChunkRejection.UNSUPPORTED_ACTION_SPACE),
    (lambda r: r.chunk(_steady(), dt_s=0.0), ChunkRejection.BAD_DT),
    (lambda r: r.chunk(_steady(), dt_s=-0.1), ChunkRejection.BAD_DT),
    (lambda r: r.chunk(_steady(), dt_s=float("nan")), ChunkRejection.BAD_DT),
    (lambda r: r.chunk(_steady()[:, :6], names=JOINTS[:6]), ChunkRejection.NAME_MISMATCH),
    (lambda r: r.chunk(_steady(), names=JOINTS[:6] + ("elbow",)), ChunkRejection.NAME_MISMATCH),
    (lambda r: r.chunk(_steady(), names=JOINTS[:6] + ("joint_1",)), ChunkRejection.NAME_MISMATCH),
    (lambda r: r.chunk(_steady()[:, :6]), ChunkRejection.BAD_SHAPE),
    (lambda r: r.chunk(np.zeros((0, 7))), ChunkRejection.BAD_SHAPE),
    (lambda r: r.chunk(HOME), ChunkRejection.BAD_SHAPE),
    (lambda r: r.chunk(np.where(np.eye(10, 7) > 0, np.nan, _steady())), ChunkRejection.NON_FINITE),
    (lambda r: r.chunk(np.where(np.eye(10, 7) > 0, -np.inf, _steady())), ChunkRejection.NON_FINITE),
    (lambda r: r.chunk(_steady(), age_s=-0.6), ChunkRejection.FUTURE_STAMP),
    (lambda r: r.ctl.add_chunk(ActionChunk(1, float(r.now_ns), "joint_position", JOINTS, 0.1, _steady()),
                               r.now_ns), ChunkRejection.BAD_STAMP),
    (lambda r: r.ctl.add_chunk(ActionChunk(1, r.now_ns, "joint_position", None, 0.1, _steady()), r.now_ns),
     ChunkRejection.NAME_MISMATCH),
    (lambda r: r.ctl.add_chunk(ActionChunk(1, r.now_ns, "joint_position", JOINTS, 0.1, [["a"] * 7]),
                               r.now_ns), ChunkRejection.BAD_SHAPE),
    (lambda r: r.chunk(_steady(horizon=3), age_s=0.25), ChunkRejection.ALL_STEPS_PAST),
])
def test_bad_chunks_are_refused_whole_and_counted(mutate, reason: ChunkRejection) -> None:
    rig = Rig()
    verdict = mutate(rig)
    assert not verdict.accepted and verdict.reason is reason
    assert verdict.message.startswith("chunk 1 refused: ")
    status = rig.ctl.status()
    assert status.rejected_chunks == {reason: 1} and status.accepted_chunks == 0
    assert status.last_reason == verdict.message
    assert rig.tick().command is None  # nothing in the plan


def test_out_of_order_and_estop_refusals() -> None:
    rig = Rig()
    assert rig.chunk(_steady(), age_s=0.1).accepted
    verdict = rig.chunk(_steady(), age_s=0.2, chunk_id=2)
    assert verdict.reason is ChunkRejection.OUT_OF_ORDER and "older than the last accepted" in verdict.message
    assert rig.chunk(_steady(), age_s=0.1, chunk_id=3).accepted  # same stamp is not older
    rig.ctl.estop(True)
    assert rig.chunk(_steady(), chunk_id=4).reason is ChunkRejection.ESTOP_LATCHED


def test_too_old_chunk_is_dropped_and_counted_apart() -> None:
    rig = Rig()
    verdict = rig.chunk(_steady(), age_s=0.6)
    assert verdict.reason is ChunkRejection.TOO_OLD and "max_chunk_age_s is 0.5" in verdict.message
    status = rig.ctl.status()
    assert status.dropped_chunks == 1 and status.rejected_chunks == {}


def test_names_are_mapped_by_name() -> None:
    rig = Rig(**{"limits.max_acceleration_rad_s2": [1e5] * 7, "limits.max_step_rad": 10.0,
                 "limits.max_velocity_rad_s": [1e3] * 7})
    order = (6, 5, 4, 3, 2, 1, 0)
    target = HOME + np.arange(7) * 0.01
    assert rig.chunk(np.tile(target[list(order)], (10, 1)), names=tuple(JOINTS[i] for i in order)).accepted
    np.testing.assert_allclose(rig.tick().command, target)


def test_steps_already_past_on_arrival_are_skipped() -> None:
    rig = Rig(**{"limits.max_acceleration_rad_s2": [1e5] * 7, "limits.max_step_rad": 10.0,
                 "limits.max_velocity_rad_s": [1e3] * 7, "blend.mode": "newest"})
    rows = HOME + np.arange(10)[:, None] * np.full(7, 0.01)  # step k moves every joint by 0.01 k
    assert rig.chunk(rows, age_s=0.23).accepted  # steps 0, 1, 2 were due before arrival
    commands = np.array([rig.tick().command for _ in range(5)])
    # Tick n is at 0.23 + 0.02 n s after the stamp: between steps 2 and 3 first, never step 0.
    expected = HOME + (np.arange(1, 6) * 0.02 + 0.23)[:, None] / 0.1 * 0.01
    np.testing.assert_allclose(commands, expected, atol=1e-12)


def test_startup_gate_refuses_a_far_first_target() -> None:
    rig = Rig()
    far = HOME.copy()
    far[1] += 0.6
    assert rig.chunk(np.tile(far, (10, 1))).accepted
    result = rig.tick()
    assert result.command is None and result.state is WatchdogState.WAITING
    status = rig.ctl.status()
    assert status.rejected_chunks == {ChunkRejection.STARTUP_TOO_FAR: 1}
    assert "joint_2 is 0.600 rad" in status.last_reason and status.run_id == 0
    assert rig.tick().hold_reason is HoldReason.NO_PLAN  # the plan was dropped


def test_gripper_is_exempt_from_the_startup_gate() -> None:
    rig = Rig()
    closed = HOME.copy()
    closed[6] = 1.0
    assert rig.chunk(np.tile(closed, (10, 1))).accepted
    assert rig.tick().state is WatchdogState.RUNNING


def test_start_outside_limits_is_refused() -> None:
    rig = Rig()
    rig.measured[2] = 2.6  # beyond position_max 2.5
    rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)
    rig.chunk(_steady())
    assert rig.tick().command is None
    assert rig.ctl.status().rejected_chunks == {ChunkRejection.START_OUTSIDE_LIMITS: 1}
    assert "joint_3" in rig.ctl.status().last_reason


def test_ramp_in_slews_to_the_first_target_within_limits_and_stops_on_it() -> None:
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    target = HOME.copy()
    target[0] += 0.45
    assert rig.chunk(np.tile(target, (50, 1))).accepted
    commands = [rig.tick() for _ in range(60)]
    positions = np.array([HOME] + [c.command for c in commands])
    assert all(c.state is WatchdogState.RUNNING and c.run_id == 1 for c in commands)
    assert positions[:, 0].max() <= target[0] + 1e-12  # no overshoot
    np.testing.assert_allclose(positions[-1], target, atol=1e-12)
    velocities = np.diff(positions, axis=0) * 50.0
    assert np.abs(velocities).max() <= 1.5 + 1e-9
    assert np.abs(np.diff(np.vstack([np.zeros(7), velocities]), axis=0) * 50.0).max() <= 6.0 + 1e-6
    assert rig.ctl.status().clip_counts[0] > 0 and rig.ctl.status().clip_counts[1:] == (0,) * 6


def test_targets_beyond_the_position_limits_are_clipped_and_counted() -> None:
    rig = Rig()
    rows = _steady(horizon=50)
    rows[:, 5] = 2.79  # near position_max 2.8 ... then beyond
    rows[3:, 5] = 50.0
    rig.measured[5] = 2.79
    rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)
    assert rig.chunk(rows).accepted
    results = [rig.tick() for _ in range(20)]
    assert all(r.state is WatchdogState.RUNNING for r in results)
    assert max(r.command[5] for r in results) == 2.8
    assert any(r.clipped[5] for r in results) and rig.ctl.status().clip_counts[5] > 0


def _running_rig(**flat: object) -> Rig:
    rig = Rig(**flat)
    moving = HOME + np.linspace(0.0, 2.0, 50)[:, None] * np.eye(7)[0]  # joint_1 at ~0.4 rad/s
    assert rig.chunk(moving).accepted
    for _ in range(20):
        assert rig.tick().state is WatchdogState.RUNNING
    return rig


def _assert_decelerates_to_rest(results: list[TickResult], state: WatchdogState) -> None:
    speeds = [np.abs(r.velocities_rad_s).max() for r in results if r.command is not None]
    assert all(r.state is state for r in results)
    assert all(b <= a + 1e-12 for a, b in zip(speeds, speeds[1:])) and speeds[-1] == 0.0


def test_chunk_timeout_holds_by_decelerating_then_silence() -> None:
    rig = _running_rig()
    results = [rig.tick() for _ in range(30)]  # no new chunk for 0.6 s (> chunk_timeout_s 0.5)
    held = [r for r in results if r.hold_reason is HoldReason.CHUNK_TIMEOUT]
    assert held and results[-1].command is None
    assert "chunk_timeout_s is 0.5" in rig.ctl.status().last_reason
    _assert_decelerates_to_rest(held, WatchdogState.HOLD)


def test_leaving_a_hold_at_rest_starts_from_where_the_robot_is_now() -> None:
    rig = _running_rig()
    held = [rig.tick() for _ in range(40)]  # chunk timeout: brake to rest, then silence
    assert held[-1].command is None and held[-1].state is WatchdogState.HOLD
    run = held[-1].run_id
    rig.measured = rig.measured + np.array([0.3, 0, 0, 0, 0, 0, 0])  # moved by hand while held
    assert rig.chunk(np.tile(rig.measured, (10, 1)), chunk_id=2).accepted
    waiting = rig.tick(follow=False)  # the measurement moved: wait until it shows the arm at rest
    assert waiting.command is None and waiting.hold_reason is HoldReason.STOPPING
    resumed = rig.tick(follow=False)
    assert resumed.run_id == run + 1
    # The first command is one limited step from the measured position, not back at the held one 0.3 rad away.
    one_step = np.asarray(rig.cfg.limits.max_velocity_rad_s) * 0.02
    assert np.all(np.abs(resumed.command - rig.measured) <= one_step + 1e-12)


def test_repeat_hold_mode_resends_the_last_command() -> None:
    rig = _running_rig(hold_mode="repeat")
    rig.ctl.estop(True)
    results = [rig.tick() for _ in range(20)]
    assert all(r.command is not None for r in results)
    np.testing.assert_array_equal(results[-1].command, results[-2].command)


def test_stale_and_invalid_joint_states_hold() -> None:
    rig = _running_rig(**{"watchdog.chunk_timeout_s": 10.0})
    results = [rig.tick(joint_state=False) for _ in range(15)]  # 0.3 s without joint states
    assert results[-1].hold_reason is HoldReason.JOINT_STATE_STALE
    assert "joint_state_timeout_s is 0.2" in rig.ctl.status().last_reason
    rig = _running_rig(**{"watchdog.chunk_timeout_s": 10.0})
    rig.ctl.update_joint_state(np.full(7, np.nan), rig.now_ns + 1, received_ns=rig.now_ns)
    result = rig.tick(joint_state=False)
    assert result.hold_reason is HoldReason.JOINT_STATE_INVALID and result.state is WatchdogState.HOLD
    assert "expected 7 finite positions" in rig.ctl.status().last_reason
    rig.ctl.update_joint_state(np.zeros(3), rig.now_ns + 1, received_ns=rig.now_ns)  # wrong size: also a hold, no crash
    assert rig.tick(joint_state=False).hold_reason is HoldReason.JOINT_STATE_INVALID
    rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)  # valid again: the watchdog lets go
    assert rig.tick(joint_state=False).hold_reason is HoldReason.NO_PLAN  # but the pre-hold plan is gone
    rig.ctl.refuse_joint_state(rig.now_ns, "joint state is missing joint(s) ['gripper']", received_ns=rig.now_ns)
    assert rig.tick(joint_state=False).hold_reason is HoldReason.JOINT_STATE_INVALID
    assert rig.ctl.status().last_reason.endswith("missing joint(s) ['gripper']")


def test_malformed_chunk_counted_as_bad_shape() -> None:
    rig = Rig()
    verdict = rig.ctl.refuse_malformed_chunk(5, "3 values do not fill horizon 2 x 7 names")
    assert verdict.reason is ChunkRejection.BAD_SHAPE
    assert rig.ctl.status().rejected_chunks == {ChunkRejection.BAD_SHAPE: 1}


def test_estop_latches_until_released_and_reset() -> None:
    rig = _running_rig()
    rig.ctl.estop(True)
    results = [rig.tick() for _ in range(20)]
    _assert_decelerates_to_rest(results, WatchdogState.ESTOP)
    assert rig.ctl.reset() == (False, "e-stop is still pressed: release it, then reset")
    rig.ctl.estop(False)
    assert rig.tick().state is WatchdogState.ESTOP  # released but latched
    ok, message = rig.ctl.reset()
    assert ok and "new run" in message
    assert rig.ctl.reset() == (True, "nothing to reset: the e-stop is not latched")
    assert rig.tick().state is WatchdogState.WAITING
    assert rig.chunk(_steady(), chunk_id=9).accepted
    assert rig.tick().run_id == 2


def test_reset_waits_for_the_arm_to_be_at_rest() -> None:
    rig = _running_rig()
    rig.ctl.estop(True)
    rig.tick()
    rig.ctl.estop(False)
    assert rig.ctl.reset() == (False, "the arm is still decelerating: reset again once it is at rest")


def test_arming_starts_a_new_run_from_the_measured_position() -> None:
    rig = Rig()
    assert not rig.ctl.armed and Rig(start_armed=True).ctl.armed
    rig.chunk(_steady(0.1, horizon=30))
    dry = [rig.tick(follow=False) for _ in range(5)]  # disarmed: the robot does not follow
    assert dry[-1].run_id == 1 and np.abs(dry[-1].command - HOME).max() > 0.0
    rig.ctl.arm(True)
    armed = rig.tick(follow=False)
    assert armed.run_id == 2
    assert np.abs(armed.command - HOME).max() <= 6.0 * 0.02 * 0.02 + 1e-12  # from rest at HOME
    rig.ctl.arm(True)  # already armed: same run
    assert rig.tick().run_id == 2


def test_joint_delta_is_relative_to_the_state_nearest_the_stamp_and_gripper_absolute() -> None:
    rig = Rig(**{"limits.max_acceleration_rad_s2": [1e5] * 7, "limits.max_step_rad": 10.0,
                 "limits.max_velocity_rad_s": [1e3] * 7})
    observed = HOME.copy()
    rig.now_ns += 100 * MS
    rig.measured = HOME + 0.05  # the arm moved after the observation
    rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)
    delta = np.tile(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7]), (10, 1))
    assert rig.chunk(delta, space="joint_delta", age_s=0.1).accepted
    command = rig.tick().command
    expected = observed + delta[0]
    expected[6] = 0.7
    np.testing.assert_allclose(command, expected, atol=1e-12)


def test_joint_delta_without_a_nearby_joint_state_is_refused() -> None:
    rig = Rig()
    rig.now_ns += 1_000 * MS
    verdict = rig.chunk(np.zeros((10, 7)), space="joint_delta", age_s=0.3)
    assert verdict.reason is ChunkRejection.NO_JOINT_STATE


def test_preview_matches_the_following_ticks() -> None:
    rig = _running_rig(**{"output.points_per_command": 4, "watchdog.chunk_timeout_s": 10.0})
    result = rig.tick()
    assert result.preview_positions.shape == (3, 7)
    following = [rig.tick().command for _ in range(3)]
    np.testing.assert_allclose(result.preview_positions, following, atol=1e-12)


def test_live_blend_change_and_static_change_refused() -> None:
    rig = _running_rig()
    rig.ctl.update_config(apply_changes(rig.cfg, {"blend.mode": "crossfade"}))
    result = rig.tick()  # a stop: the plan is dropped, the arm decelerates
    assert rig.ctl.status().blend_mode == "crossfade" and result.hold_reason is HoldReason.NO_PLAN
    assert "parameter change (blend)" in rig.ctl.status().last_reason
    with pytest.raises(ConfigError, match="restart required"):
        rig.ctl.update_config(apply_changes(rig.cfg, {"joint_names": list(JOINTS[::-1])}, allow_static=True))


def test_status_reports_everything_the_diagnostics_need() -> None:
    rig = _running_rig()
    rig.chunk(_steady(), dt_s=0.0, chunk_id=7)
    status = rig.ctl.status()
    assert status.state is WatchdogState.RUNNING and status.hold_reason is HoldReason.NONE
    assert not status.armed and not status.estop_latched and status.accepted_chunks == 1
    assert status.rejected_chunks == {ChunkRejection.BAD_DT: 1} and len(status.clip_counts) == 7
    assert status.last_reason.startswith("chunk 7 refused: dt 0.0 s")


def _cruise(rig: Rig, joint: int = 0, speed: float = 1.5, ticks: int = 40) -> None:
    """Follow a plan moving `joint` at `speed` rad/s until the arm cruises at it."""
    rows = HOME + np.arange(30)[:, None] * 0.1 * speed * np.eye(7)[joint]
    assert rig.chunk(rows).accepted
    for _ in range(ticks):
        assert rig.tick().state is WatchdogState.RUNNING


def _accelerations(commands: list[np.ndarray], times_ns: list[int]) -> np.ndarray:
    positions, times = np.array(commands), np.array(times_ns) * 1e-9
    velocities = np.diff(positions, axis=0) / np.diff(times)[:, None]
    return np.abs(np.diff(velocities, axis=0)) / np.diff(times)[1:, None]


@pytest.mark.parametrize("measured", [2.18, 2.35])
def test_restart_after_a_hold_with_the_arm_beyond_a_limit_is_refused(measured: float) -> None:
    """Bug: the outside-limits check ran only at the very first start; after a hold the arm, pushed
    to 2.18 beyond joint_5's 2.1, got 2.10 then 2.05 (125 and 250 rad/s^2 against 20)."""
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    rows = np.tile(HOME, (10, 1))
    rows[:, 4] = 2.05
    rig.measured[4] = 2.05
    assert rig.chunk(rows).accepted
    assert rig.tick().state is WatchdogState.RUNNING
    for _ in range(60):  # chunks stop: the plan ends, the arm holds at rest
        rig.tick()
    assert rig.tick().command is None
    rig.measured[4] = measured  # the real arm was pushed beyond the limit
    assert rig.chunk(rows, chunk_id=2).accepted
    results = [rig.tick(follow=False) for _ in range(5)]
    assert all(r.command is None for r in results)
    assert rig.ctl.status().rejected_chunks == {ChunkRejection.START_OUTSIDE_LIMITS: 1}
    assert "joint_5" in rig.ctl.status().last_reason


def test_a_future_stamped_joint_state_is_refused_and_does_not_freeze_the_measurement() -> None:
    """Bug: one state stamped now + 20 s made later, correct states 'older' and ignored; the next
    run started from the frozen position (0.29 rad in 20 ms) and with /joint_states stopped the
    watchdog never held (2.27 rad moved in 3 s without a joint state)."""
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    rig.ctl.update_joint_state(HOME + 0.3, rig.now_ns + 20_000 * MS, received_ns=rig.now_ns)
    assert rig.ctl.status().refused_joint_states == 1
    assert "stamped +20.000 s from its receipt" in rig.ctl.status().last_reason
    rig.measured = HOME + np.array([0.29, 0, 0, 0, 0, 0, 0])  # the arm is really here
    assert rig.chunk(np.tile(rig.measured, (10, 1))).accepted
    first = rig.tick(follow=False)
    np.testing.assert_allclose(first.command, rig.measured, atol=1e-12)  # from the real position
    for _ in range(15):  # joint states stop entirely: hold within joint_state_timeout_s
        result = rig.tick(joint_state=False)
    assert result.hold_reason is HoldReason.JOINT_STATE_STALE


@pytest.mark.parametrize("skew_s", [-0.3, 0.3])
def test_a_robot_clock_slightly_off_neither_holds_forever_nor_defeats_the_watchdog(skew_s: float) -> None:
    """Bug: staleness compared the robot's stamps with this node's clock: 0.3 s behind held for ever."""
    rig = Rig()
    stamp = lambda: rig.now_ns + round(skew_s * 1e9)  # noqa: E731
    rig.ctl.update_joint_state(rig.measured, stamp(), received_ns=rig.now_ns)
    assert rig.chunk(np.tile(HOME, (10, 1)), age_s=-skew_s).accepted
    rig.now_ns += 20 * MS
    rig.ctl.update_joint_state(rig.measured, stamp(), received_ns=rig.now_ns)
    assert rig.ctl.tick(rig.now_ns).state is WatchdogState.RUNNING
    assert rig.ctl.tick(rig.now_ns + 300 * MS).hold_reason is HoldReason.JOINT_STATE_STALE


def test_live_control_rate_change_decelerates_within_the_acceleration_limit() -> None:
    """Bug: cruising at 1.5 rad/s, control_rate_hz 15 was accepted and the next command braked at
    11.25 rad/s^2 against 6 (max_step per tick forced the new velocity bound at once)."""
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    _cruise(rig)
    commands, times = [rig.measured.copy()], [rig.now_ns]
    rig.ctl.update_config(apply_changes(rig.cfg, {"control_rate_hz": 15.0}))
    for _ in range(20):
        rig.now_ns += 66 * MS
        rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)
        result = rig.ctl.tick(rig.now_ns)
        if result.command is not None:
            rig.measured = result.command.copy()
            commands.append(result.command)
            times.append(rig.now_ns)
    assert "parameter change (control_rate_hz)" in rig.ctl.status().last_reason
    commands.insert(0, commands[0] - 1.5 * 0.02 * np.eye(7)[0])  # cruising at 1.5 rad/s before
    times.insert(0, times[0] - 20 * MS)
    assert _accelerations(commands, times).max() <= 6.0 + 1e-6


def test_the_startup_gate_applies_after_a_pause_to_the_target_really_executed() -> None:
    """Bug: after a 0.65 s policy pause the gate checked a blend still holding pre-pause chunks and
    let a target 0.9 rad away through (a fresh node refused it)."""
    rig = Rig()
    _cruise(rig, speed=0.0, ticks=5)
    for _ in range(33):  # 0.66 s without a chunk: chunk timeout, the plan is dropped, the arm holds
        rig.tick()
    far = rig.measured + 0.9 * np.eye(7)[1]
    assert rig.chunk(np.tile(far, (10, 1)), chunk_id=2).accepted
    result = rig.tick()
    assert result.command is None or np.abs(result.command - rig.measured).max() < 0.01
    assert rig.ctl.status().rejected_chunks == {ChunkRejection.STARTUP_TOO_FAR: 1}


def test_chunks_from_before_a_hold_are_never_resumed() -> None:
    """Bug class: leftover plans resumed after a protective stop (the UR driver's lesson)."""
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    rows = HOME + np.linspace(0.0, 0.4, 20)[:, None] * np.eye(7)[0]  # 2 s long
    assert rig.chunk(rows).accepted
    rig.tick()
    for _ in range(15):  # joint states drop out: hold
        rig.tick(joint_state=False)
    results = [rig.tick() for _ in range(20)]  # they are back; the old chunk still covers now
    assert all(r.state is WatchdogState.HOLD and r.hold_reason is HoldReason.NO_PLAN for r in results)


def test_disarming_mid_motion_decelerates_on_the_robot_topic_then_goes_dry_run() -> None:
    """Bug: disarming stopped sending at once; the controller halted from 1.5 rad/s (~75 rad/s^2)."""
    rig = Rig(start_armed=True, **{"watchdog.chunk_timeout_s": 10.0})
    _cruise(rig)
    before = [rig.measured - 1.5 * 0.02 * np.eye(7)[0], rig.measured.copy()]
    rig.ctl.arm(False)
    assert not rig.ctl.armed
    results = [rig.tick() for _ in range(20)]
    to_robot = [r for r in results if r.to_robot]
    assert to_robot and all(r.command is not None for r in to_robot)
    speeds = [np.abs(r.velocities_rad_s).max() for r in to_robot]
    assert speeds[-1] == 0.0 and all(b < a or b == 0.0 for a, b in zip(speeds, speeds[1:]))
    commands = before + [r.command for r in to_robot]
    assert np.abs(np.diff(np.diff(np.array(commands), axis=0), axis=0)).max() / 0.02**2 <= 6.0 + 1e-6
    assert not any(r.to_robot for r in results[len(to_robot):])


def test_late_and_bunched_ticks_keep_the_limits_in_real_time() -> None:
    """Bug: commands left 0.26-0.44 of a period apart while each said one period: up to ~3x the
    velocity limit in real time. The limits now hold over the real spacing (elapsed_s)."""
    rig = Rig(**{"watchdog.chunk_timeout_s": 10.0})
    assert rig.chunk(HOME + np.arange(15)[:, None] * 0.15 * np.eye(7)[0]).accepted  # 1.5 rad/s
    spacings_ms = [20, 6, 34, 5, 55, 9, 20, 20, 7, 33] * 6
    commands, times = [rig.measured.copy()], [rig.now_ns]  # the run starts one period before its first command
    for spacing in spacings_ms:
        rig.now_ns += spacing * MS
        rig.ctl.update_joint_state(rig.measured, rig.now_ns, received_ns=rig.now_ns)
        result = rig.ctl.tick(rig.now_ns)
        rig.measured = result.command.copy()
        assert result.elapsed_s == pytest.approx(spacing * 1e-3 if len(commands) > 1 else 0.02)
        assert result.lead_s == 0.02
        commands.append(result.command)
        times.append(rig.now_ns)
    positions, t = np.array(commands), np.array(times) * 1e-9
    velocities = np.diff(positions, axis=0) / np.diff(t)[:, None]
    assert np.abs(velocities).max() <= 1.5 + 1e-9 and np.abs(velocities).max() > 1.4
    assert _accelerations(commands, times).max() <= 6.0 + 1e-6


def test_heartbeat_mode_holds_when_the_estop_source_goes_silent() -> None:
    rig = Rig(**{"estop.heartbeat_timeout_s": 0.1, "watchdog.chunk_timeout_s": 10.0})
    assert rig.chunk(np.tile(HOME, (30, 1))).accepted
    assert rig.tick().hold_reason is HoldReason.ESTOP_HEARTBEAT  # nothing heard yet
    for _ in range(10):
        rig.ctl.estop(False)
        result = rig.tick()
    assert rig.chunk(np.tile(HOME, (30, 1)), chunk_id=2).accepted
    rig.ctl.estop(False)
    assert rig.tick().state is WatchdogState.RUNNING
    results = [rig.tick() for _ in range(10)]  # silent for 0.2 s
    assert results[-1].hold_reason is HoldReason.ESTOP_HEARTBEAT
    assert "heartbeat_timeout_s 0.1" in rig.ctl.status().last_reason
    assert not rig.ctl.status().estop_latched
    del result
