"""Safety properties of SafetyController under any input, checked with hypothesis.

For any sequence of chunks (NaN, inf, huge values, jumps, wrong names, bad dt, out-of-order and
future stamps), joint states (NaN, wrong values, stale, reordered), random tick timing, blend-mode
changes, e-stops, resets and arming: every command is finite and inside the position limits, and
consecutive commands of a run keep the velocity and acceleration limits (a run's first command
relative to the measured position at rest; "send nothing" inside a run only once at rest, since the
controller then holds that command). Holds never speed a joint up. Nothing raises.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vla_ros.config import apply_changes, from_flat
from vla_ros.config.safety import BLEND_MODES, SafetyConfig
from vla_ros.control.limits import JointLimits
from vla_ros.control.safety import ChunkRejection, SafetyController, TickResult
from vla_ros.control.watchdog import WatchdogState
from vla_ros.types import ActionChunk

MS = 1_000_000
JOINTS = SafetyConfig().joint_names
HOME = np.array([0.0, -0.12, 2.11, 0.0, 1.15, 0.0, 0.0])
VELOCITY_TOL = 1e-9  # rad/s: float rounding of (a - b) / dt only
ACCEL_TOL = 1e-6  # rad/s^2


class StreamChecker:
    """Checks every command against the previous one of its run, over the timing it carries.

    A command is stamped with its tick (harness time) and due lead_s later; lead_s is fixed within
    a run, so consecutive commands are due exactly as far apart as their ticks. Velocity and
    acceleration are computed over that real spacing, whatever the tick jitter. Also checked: a
    run starts at rest from the controller's measured position, inside the limits; after a stop
    (any hold, e-stop, disarm, live rate/blend change) the arm only follows a plan again in a new
    run (nothing from before the stop is resumed); the robot's command stream never goes silent
    or switches to dry run while the last command it received was moving.
    """

    def __init__(self, limits: JointLimits) -> None:
        self.limits = limits
        self.run_id = 0
        self.last: np.ndarray | None = None
        self.last_ns = 0
        self.lead_s = 0.0
        self.last_velocity = np.zeros(len(limits.joint_names))
        self.stopped = False  # a stop happened in this run: it may only brake now
        self.robot_velocity = np.zeros(len(limits.joint_names))  # of the last command the robot got

    def check(self, result: TickResult, now_ns: int, measured: np.ndarray | None) -> None:
        robot_got_one = result.command is not None and result.to_robot
        if not robot_got_one:
            assert np.abs(self.robot_velocity).max() == 0.0, "the robot's stream ended while moving"
        if result.run_id == 0:  # no command stream (waiting): nothing is sent
            assert result.command is None and result.state in (WatchdogState.WAITING, WatchdogState.ESTOP)
            return
        if result.state in (WatchdogState.HOLD, WatchdogState.ESTOP):
            self.stopped = True
        if result.run_id != self.run_id:  # a new stream starts at rest from the measured position
            assert result.run_id > self.run_id and measured is not None
            lim = self.limits
            assert np.all(measured >= lim.position_min_rad) and np.all(measured <= lim.position_max_rad), \
                f"a run started outside the limits at {measured}"
            assert result.elapsed_s == result.period_s and result.command is not None
            # Its first command: one step from rest at the measured position (a fresh start), or the
            # seed itself (a resumed stream: the held command if measured there, at rest).
            first_step = lim.max_acceleration_rad_s2 * result.period_s ** 2
            assert np.all(np.abs(result.command - measured) <= first_step + 1e-12), "a run did not start " \
                f"where the arm is measured: {result.command} vs {measured}"
            assert np.all(np.abs(result.velocities_rad_s) <= lim.max_acceleration_rad_s2 * result.period_s + 1e-9)
            self.run_id, self.lead_s, self.stopped = result.run_id, result.lead_s, False
            self.last, self.last_velocity, self.last_ns = result.command, result.velocities_rad_s, now_ns
            if result.to_robot:
                self.robot_velocity = result.velocities_rad_s
            return
        elif result.state is WatchdogState.RUNNING:
            assert not self.stopped, "the plan was resumed after a stop without a new run"
        if result.command is None:  # silent hold: the controller keeps the last command
            assert result.state in (WatchdogState.HOLD, WatchdogState.ESTOP)
            assert np.abs(self.last_velocity).max() == 0.0, "went silent while still moving"
            return
        assert result.lead_s == self.lead_s, "the lead changed within a run: due times would jump"
        dt = (now_ns - self.last_ns) * 1e-9
        assert abs(result.elapsed_s - dt) < 1e-9, (result.elapsed_s, dt)
        velocity = self._check_step(self.last, self.last_velocity, result.command, dt, result.period_s)
        np.testing.assert_allclose(result.velocities_rad_s, velocity, atol=VELOCITY_TOL)
        if result.state in (WatchdogState.HOLD, WatchdogState.ESTOP):
            assert np.all(np.abs(velocity) <= np.abs(self.last_velocity) + VELOCITY_TOL), "hold sped up"
        previous, previous_velocity = result.command, velocity
        for position in result.preview_positions:  # previews go to the robot too (trajectory points)
            previous_velocity = self._check_step(previous, previous_velocity, position, result.period_s,
                                                 result.period_s)
            previous = position
        self.last, self.last_velocity, self.last_ns = result.command, velocity, now_ns
        if result.to_robot:
            self.robot_velocity = velocity

    def _check_step(self, previous: np.ndarray, previous_velocity: np.ndarray, command: np.ndarray,
                    dt_s: float, period_s: float) -> np.ndarray:
        lim = self.limits
        assert np.all(np.isfinite(command)), command
        assert np.all(command >= lim.position_min_rad) and np.all(command <= lim.position_max_rad), command
        velocity = (command - previous) / dt_s
        excess = np.abs(velocity) - lim.max_velocity_rad_s
        assert excess.max() <= VELOCITY_TOL, f"velocity over the limit by {excess.max()} rad/s"
        # max_step per period: only exceeded while slowing down to it after a live rate change.
        excess = np.abs(velocity) - np.maximum(lim.velocity_bound_rad_s(period_s), np.abs(previous_velocity))
        assert excess.max() <= VELOCITY_TOL, f"velocity over max_step per period by {excess.max()} rad/s"
        accel = np.abs(velocity - previous_velocity) / dt_s - lim.max_acceleration_rad_s2
        assert accel.max() <= ACCEL_TOL, f"acceleration over the limit by {accel.max()} rad/s^2"
        return velocity


class Harness:
    """Drives a controller on a simulated clock with a simulated robot and policy.

    The robot follows the commands sent to it and, while `robot_publishing`, sends its joint state
    before every tick; while `policy_running` a plausible chunk (near the robot) arrives every 5th
    tick. Events switch both on and off and inject adversarial inputs in between. The harness keeps
    its own model of the measured position (the newest received joint state that is finite, of the
    right size and stamped within max_stamp_skew_s of its receipt) to check where runs start.
    """

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg
        self.ctl = SafetyController(cfg)
        self.checker = StreamChecker(self.ctl.limits)
        self.now_ns = 10_000 * MS
        self.robot = HOME.copy()  # where the robot really is
        self.robot_publishing = True
        self.policy_running = True
        self.ticks = 0
        self.chunk_id = 0
        self.measured: np.ndarray | None = None  # what the controller seeds a run from
        self.last_accepted_ns: int | None = None

    def joint_state(self, positions: np.ndarray, stamp_ns: int) -> None:
        self.ctl.update_joint_state(positions, stamp_ns, received_ns=self.now_ns)
        if (positions.shape == HOME.shape and np.all(np.isfinite(positions))
                and abs(stamp_ns - self.now_ns) <= self.cfg.watchdog.max_stamp_skew_s * 1e9):
            self.measured = positions.copy()

    def add_chunk(self, chunk: ActionChunk) -> None:
        verdict = self.ctl.add_chunk(chunk, self.now_ns)
        assert verdict.accepted == (verdict.reason is None)
        if verdict.accepted:
            self.last_accepted_ns = self.now_ns

    def update_config(self, changes: dict) -> None:
        self.cfg = apply_changes(self.cfg, changes)
        self.ctl.update_config(self.cfg)

    def tick(self, advance_ns: int) -> TickResult:
        self.now_ns += advance_ns
        self.ticks += 1
        if self.robot_publishing:
            self.joint_state(self.robot.copy(), self.now_ns)
        if self.policy_running and self.ticks % 5 == 1:
            self.chunk_id += 1
            wave = np.sin(np.arange(10)[:, None] * 0.3 + np.arange(7) + self.chunk_id)  # (10, 7)
            self.add_chunk(ActionChunk(self.chunk_id, self.now_ns - 30 * MS, "joint_position", JOINTS,
                                       0.1, self.robot + 0.1 * wave))
        result = self.ctl.tick(self.now_ns)
        self.checker.check(result, self.now_ns, self.measured)
        if result.command is not None and result.to_robot:
            self.robot = result.command.copy()
        return result


def _unit(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Values in [-1, 1] from a drawn seed: cheaper for hypothesis than drawing every float."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape)


_seeds = st.integers(0, 2**32 - 1)
_unit_rows = st.builds(lambda h, seed: _unit(seed, (h, 7)), st.integers(0, 12), _seeds)
_chunk_events = st.tuples(
    st.just("chunk"),
    st.sampled_from(["near", "near", "ramp", "cruise", "cruise", "absolute", "jump", "huge", "nan", "inf"]),
    _unit_rows,
    st.integers(-700, 700),  # stamp age on arrival [ms] (negative: future)
    st.one_of(st.sampled_from([0.1, 0.05, 0.0, -0.1, float("nan"), float("inf"), 1e300]),
              st.floats(0.001, 0.5)),
    st.sampled_from(["ok", "ok", "ok", "permuted", "missing", "extra"]),
    st.sampled_from(["joint_position", "joint_position", "joint_delta", "ee_delta"]))
_joint_events = st.tuples(
    st.just("joint"), st.sampled_from(["robot", "robot", "robot", "noisy", "nan", "random", "short"]),
    st.one_of(st.integers(-400, 5), st.sampled_from([-30_000, -2_000, 1_500, 20_000])),  # stamp - now [ms]
    st.builds(lambda seed: _unit(seed, (7,)), _seeds))
_tick_events = st.tuples(st.just("tick"), st.integers(1, 60), st.integers(1, 25))
_events = st.lists(st.one_of(
    _tick_events, _tick_events, _chunk_events, _joint_events,
    st.tuples(st.just("robot_publishing"), st.booleans()),
    st.tuples(st.just("policy_running"), st.booleans()),
    st.tuples(st.just("wait"), st.integers(100, 1500)),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("reset")), st.tuples(st.just("release_and_reset")),
    st.tuples(st.just("arm"), st.booleans()),
    st.tuples(st.just("blend"), st.sampled_from(BLEND_MODES), st.floats(-5.0, 5.0), st.floats(0.0, 0.5)),
), min_size=20, max_size=50)


def _chunk_from(harness: Harness, event: tuple, chunk_id: int) -> ActionChunk:
    _, kind, unit, age_ms, dt_s, names_kind, space = event
    steps = np.arange(unit.shape[0])[:, None] * np.sign(unit[:1])
    ramp = steps * 4.0 / max(unit.shape[0] - 1, 1)  # faster than the arm may follow
    cruise = steps * 1.45 * (dt_s if np.isfinite(dt_s) and abs(dt_s) < 1.0 else 0.1)  # 1.45 rad/s: followable
    rows = {"near": harness.robot + 0.2 * unit, "ramp": harness.robot + ramp,
            "cruise": harness.robot + cruise, "absolute": 3.0 * unit,
            "jump": harness.robot + 2.0 * unit,
            "huge": 1e300 * unit, "nan": np.where(unit > 0.5, np.nan, unit),
            "inf": np.where(unit < -0.5, -np.inf, unit)}[kind]
    names = JOINTS
    if names_kind == "permuted":
        names, rows = JOINTS[::-1], rows[:, ::-1]
    elif names_kind == "missing":
        names, rows = JOINTS[:6], rows[:, :6]
    elif names_kind == "extra":
        names, rows = JOINTS + ("elbow",), np.hstack([rows, np.zeros((rows.shape[0], 1))])
    if space == "joint_delta" and kind in ("near", "ramp", "cruise", "jump") and rows.shape[1] == 7:
        rows = rows - harness.robot
    return ActionChunk(chunk_id, harness.now_ns - age_ms * MS, space, names, dt_s, rows)


def _run(harness: Harness, events: list[tuple]) -> None:
    for i, event in enumerate(events):
        kind = event[0]
        if kind == "tick":
            for _ in range(event[2]):
                harness.tick(event[1] * MS)
        elif kind in ("robot_publishing", "policy_running"):
            setattr(harness, kind, event[1])
        elif kind == "wait":
            harness.now_ns += event[1] * MS
        elif kind == "chunk":
            harness.add_chunk(_chunk_from(harness, event, -i))
        elif kind == "joint":
            _, source, offset_ms, unit = event
            positions = {"robot": harness.robot, "noisy": harness.robot + 0.01 * unit,
                         "nan": np.where(unit > 0.0, np.nan, harness.robot), "random": 3.0 * unit,
                         "short": harness.robot[:3]}[source]
            harness.joint_state(positions, harness.now_ns + offset_ms * MS)
        elif kind == "estop":
            harness.ctl.estop(event[1])
        elif kind == "reset":
            harness.ctl.reset()
        elif kind == "release_and_reset":
            harness.ctl.estop(False)
            harness.ctl.reset()
        elif kind == "arm":
            harness.ctl.arm(event[1])
        elif kind == "blend":
            blend = dataclasses.replace(harness.cfg.blend, mode=event[1], ensemble_decay=event[2],
                                        crossfade_s=event[3])
            harness.cfg = dataclasses.replace(harness.cfg, blend=blend)
            harness.ctl.update_config(harness.cfg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events, rate_hz=st.sampled_from([10.0, 50.0, 100.0]),
       hold_mode=st.sampled_from(["silent", "repeat"]), points=st.integers(1, 4),
       accel=st.sampled_from([0.5, 6.0, 200.0]))
def test_every_command_keeps_the_limits_whatever_comes_in(events, rate_hz, hold_mode, points, accel) -> None:
    cfg = from_flat(SafetyConfig, {"control_rate_hz": rate_hz, "hold_mode": hold_mode,
                                   "output.points_per_command": points,
                                   "limits.max_acceleration_rad_s2": [accel] * 7})
    harness = Harness(cfg)
    harness.joint_state(HOME.copy(), harness.now_ns)
    _run(harness, events)


class WatchdogMachine(RuleBasedStateMachine):
    """The e-stop / arm / watchdog state machine against a small model of what must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.harness = Harness(SafetyConfig())
        self.pressed = False
        self.latched = False
        self.armed = False
        self.joint_ok_ns: int | None = None  # stamp of the newest joint state if it was valid

    @rule(pressed=st.booleans())
    def estop(self, pressed: bool) -> None:
        self.harness.ctl.estop(pressed)
        self.pressed = pressed
        self.latched = self.latched or pressed

    @rule()
    def reset(self) -> None:
        ok, message = self.harness.ctl.reset()
        if self.pressed:
            assert not ok and "still pressed" in message
        elif not self.latched:
            assert ok
        elif ok:
            self.latched = False

    @rule(armed=st.booleans())
    def arm(self, armed: bool) -> None:
        self.harness.ctl.arm(armed)
        self.armed = armed

    @rule(offset=st.floats(-0.3, 0.3), joint=st.integers(0, 6))
    def chunk(self, offset: float, joint: int) -> None:
        h = self.harness
        h.chunk_id += 1
        rows = np.tile(h.robot + offset * np.eye(7)[joint], (10, 1))
        verdict = h.ctl.add_chunk(ActionChunk(h.chunk_id, h.now_ns, "joint_position", JOINTS, 0.1, rows),
                                  h.now_ns)
        assert verdict.accepted == (not self.latched), verdict
        if self.latched:
            assert verdict.reason is ChunkRejection.ESTOP_LATCHED
        else:
            h.last_accepted_ns = h.now_ns

    @rule(publishing=st.booleans())
    def robot_publishing(self, publishing: bool) -> None:
        self.harness.robot_publishing = publishing

    @rule(running=st.booleans())
    def policy_running(self, running: bool) -> None:
        self.harness.policy_running = running

    @rule()
    def bad_joint_state(self) -> None:
        h = self.harness
        h.joint_state(np.full(7, np.nan), h.now_ns)
        self.joint_ok_ns = None

    @rule(advance_ms=st.one_of(st.integers(5, 30), st.integers(5, 30), st.integers(30, 800)),
          count=st.integers(1, 15))
    def tick(self, advance_ms: int, count: int) -> None:
        h = self.harness
        cfg = h.cfg.watchdog
        for _ in range(count):
            accepted_before = h.last_accepted_ns
            result = h.tick(advance_ms * MS)
            if self.latched:
                assert h.last_accepted_ns == accepted_before, "a chunk was accepted under e-stop"
            if h.robot_publishing:
                self.joint_ok_ns = h.now_ns
            if self.latched:
                assert result.state is WatchdogState.ESTOP
            if result.state is WatchdogState.RUNNING:
                assert not self.latched and self.joint_ok_ns is not None
                assert h.now_ns - self.joint_ok_ns <= cfg.joint_state_timeout_s * 1e9
                assert h.now_ns - h.last_accepted_ns <= cfg.chunk_timeout_s * 1e9
            if result.state is WatchdogState.WAITING:
                assert result.command is None

    @invariant()
    def status_matches_the_model(self) -> None:
        status = self.harness.ctl.status()
        assert status.armed == self.armed and status.estop_latched == self.latched
        assert status.estop_pressed == self.pressed


WatchdogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_watchdog_state_machine = WatchdogMachine.TestCase


# Every live (dynamic) safety_node parameter and values to switch it to.
_LIVE_CHANGES = st.one_of(
    st.tuples(st.just("control_rate_hz"), st.sampled_from([10.0, 15.0, 50.0, 100.0, 250.0])),
    st.tuples(st.just("blend.mode"), st.sampled_from(BLEND_MODES)),
    st.tuples(st.just("blend.ensemble_decay"), st.floats(-5.0, 5.0)),
    st.tuples(st.just("blend.crossfade_s"), st.floats(0.0, 0.5)),
    st.tuples(st.just("watchdog.chunk_timeout_s"), st.floats(0.05, 2.0)),
    st.tuples(st.just("watchdog.joint_state_timeout_s"), st.floats(0.01, 1.0)),
    st.tuples(st.just("watchdog.max_stamp_skew_s"), st.floats(0.05, 5.0)),
    st.tuples(st.just("max_chunk_age_s"), st.floats(0.01, 2.0)),
    st.tuples(st.just("startup_max_distance_rad"), st.floats(0.0, 2.0)))


class EnvelopeMachine(RuleBasedStateMachine):
    """The envelope under everything a robot, a policy and an operator do, in any order.

    Steps: jittered ticks (late, early, bunched), joint-state streams with future, past and equal
    stamps, dropouts, NaN and positions beyond the limits (the arm pushed or drifting while held),
    a robot that lags its commands, chunks near and far, holds and resumes, arm/disarm, e-stop
    press/release/reset, heartbeat messages, and live changes of every live parameter. Every tick
    is checked by StreamChecker (bugs it catches: a restart from a frozen or outside-limits
    position, a plan resumed after a stop, a rate change braking harder than the limit, a disarm
    that goes silent mid-motion, late ticks stepping as if on time).
    """

    def __init__(self) -> None:
        super().__init__()
        self.harness: Harness | None = None

    @initialize(heartbeat=st.sampled_from([0.0, 0.0, 0.15]), hold_mode=st.sampled_from(["silent", "repeat"]),
                points=st.integers(1, 3), accel=st.sampled_from([2.0, 6.0, 50.0]),
                armed=st.booleans())
    def start(self, heartbeat: float, hold_mode: str, points: int, accel: float, armed: bool) -> None:
        cfg = from_flat(SafetyConfig, {"estop.heartbeat_timeout_s": heartbeat, "hold_mode": hold_mode,
                                       "output.points_per_command": points, "start_armed": armed,
                                       "limits.max_acceleration_rad_s2": [accel] * 7})
        self.harness = Harness(cfg)
        self.heartbeat = heartbeat > 0.0
        self.lag = 1.0  # fraction of each command the robot moves

    @rule(spacing_ms=st.sampled_from([1, 5, 10, 20, 20, 20, 30, 60]), count=st.integers(1, 20),
          jitter=st.lists(st.integers(-15, 40), min_size=1, max_size=5))
    def ticks(self, spacing_ms: int, count: int, jitter: list[int]) -> None:
        h = self.harness
        for i in range(count):
            if self.heartbeat and i % 3 == 0:
                h.ctl.estop(h.ctl.status().estop_pressed)  # the e-stop source keeps publishing its state
            before = h.robot.copy()
            h.tick(max(spacing_ms + jitter[i % len(jitter)], 1) * MS)
            h.robot = before + self.lag * (h.robot - before)  # the arm may lag its commands

    @rule(lag=st.sampled_from([1.0, 1.0, 0.5, 0.0]))
    def robot_lag(self, lag: float) -> None:
        self.lag = lag

    @rule(joint=st.integers(0, 6), offset=st.sampled_from([-0.4, -0.1, 0.05, 0.2, 0.4]))
    def push_robot(self, joint: int, offset: float) -> None:
        """The arm is pushed or drifts, possibly beyond a position limit."""
        self.harness.robot[joint] += offset

    @rule(joint=st.integers(0, 5), beyond=st.floats(0.01, 0.4), upper=st.booleans())
    def push_beyond_a_limit(self, joint: int, beyond: float, upper: bool) -> None:
        """The arm ends up just beyond a position limit (pushed while held, or drift)."""
        lim = self.harness.ctl.limits
        self.harness.robot[joint] = (lim.position_max_rad[joint] + beyond if upper
                                     else lim.position_min_rad[joint] - beyond)

    @rule(publishing=st.booleans(), running=st.booleans())
    def sources(self, publishing: bool, running: bool) -> None:
        self.harness.robot_publishing = publishing
        self.harness.policy_running = running

    @rule(offset_ms=st.sampled_from([-30_000, -2_000, -300, -50, 0, 0, 50, 300, 2_000, 20_000]),
          value=st.sampled_from(["robot", "robot", "nan", "short", "outside"]))
    def joint_state(self, offset_ms: int, value: str) -> None:
        h = self.harness
        positions = {"robot": h.robot.copy(), "nan": np.full(7, np.nan), "short": h.robot[:3].copy(),
                     "outside": h.robot + np.array([0, 0, 0, 0, 1.5, 0, 0])}[value]
        h.joint_state(positions, h.now_ns + offset_ms * MS)

    @rule(offset=st.floats(-0.9, 0.9), joint=st.integers(0, 6), age_ms=st.integers(-100, 400))
    def chunk(self, offset: float, joint: int, age_ms: int) -> None:
        h = self.harness
        h.chunk_id += 1
        rows = h.robot + offset * np.eye(7)[joint] * np.linspace(0.0, 1.0, 10)[:, None]
        h.add_chunk(ActionChunk(h.chunk_id, h.now_ns - age_ms * MS, "joint_position", JOINTS, 0.1, rows))

    @rule(pressed=st.booleans(), reset=st.booleans())
    def estop(self, pressed: bool, reset: bool) -> None:
        self.harness.ctl.estop(pressed)
        if reset:
            self.harness.ctl.reset()

    @rule(armed=st.booleans())
    def arm(self, armed: bool) -> None:
        self.harness.ctl.arm(armed)

    @rule(change=_LIVE_CHANGES)
    def live_change(self, change: tuple) -> None:
        self.harness.update_config({change[0]: change[1]})

    @invariant()
    def status_is_consistent(self) -> None:
        if self.harness is None:
            return
        status = self.harness.ctl.status()
        assert status.estop_latched or not status.estop_pressed
        assert status.state is not WatchdogState.RUNNING or status.hold_reason.value == "none"


EnvelopeMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
test_envelope_state_machine = EnvelopeMachine.TestCase
