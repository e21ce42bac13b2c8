"""SafetyController: from action chunks and joint states to limited robot commands.

The only logic between the policy and the robot; safety_node converts messages and calls it.
Public API (stable; other nodes and tools build on it): add_chunk, refuse_malformed_chunk,
update_joint_state, refuse_joint_state, estop, reset, arm, update_config, tick, status.

Runs. A run is one continuous command stream. It starts at a tick where the plan may be followed
and no stream is moving: from the measured position, at rest, through the start-up gate. Within
a run every command keeps the limits relative to the previous one over their real spacing
(limits.py: a tick that comes late may step proportionally farther, one that comes early less,
so the commanded motion keeps the limits in real time, not only at the nominal rate).

Resuming. A run that follows a held stream starts with the stream's held command when the arm is
measured there (within max_acceleration * period^2), else with the measured position, and its
first command is that seed itself (at rest): its timeline then stays consistent with the last
command the robot got, however long ago that was.

Stops. A hold (watchdog, heartbeat, no plan), the e-stop, disarming and a live change of
control_rate_hz or blend.* are stops: the plan is dropped (chunks computed before a stop are never
resumed after it) and the stream decelerates within the limits to rest. Only then may a new run
start, from where the robot is measured to be (it may have been pushed or have drifted while
held) and through the start-up gate on the chunks that arrived since; while the arm is still
braking, and until joint states taken after its last command was due show the arm at rest
(states in flight while it stopped are no start point), fresh chunks wait (hold reason STOPPING).
At rest a held stream keeps its last command
(hold_mode silent: send nothing more, the controller holds it; repeat: re-send it every tick).
Hold, never home.

Start-up gate. Before a run starts, the measured position must be inside the position limits
(START_OUTSIDE_LIMITS otherwise) and the plan's target due now within startup_max_distance_rad
of it on every arm joint (not the gripper: other units; STARTUP_TOO_FAR otherwise); a refusal
drops the plan and is counted. A nearer target is slewed to under the limits.

Joint states are judged fresh by their receipt time on this node's clock. A stamp more than
watchdog.max_stamp_skew_s from its receipt is refused and counted, never trusted (a future stamp
must not freeze the measurement, a robot clock behind must not hold forever). The newest received
usable state is the measured position.

Chunks. Names are mapped by name (any order of the configured joint set, no extra or missing
names). joint_position rows are absolute; joint_delta rows are offsets from the measured joint
state nearest in time to the chunk's stamp, i.e. the state the policy observed (the gripper row is
absolute unless gripper.is_absolute_in_joint_delta is false). A chunk is refused whole, counted
by reason, when anything is wrong; nothing is repaired. Targets outside the position limits are
clipped to them and counted as clips.

Output. Each command is due TickResult.lead_s after the tick (JointTrajectory time_from_start
of its first point; fixed within a run, so consecutive commands are due exactly as far apart as
they were computed); TickResult.elapsed_s is that spacing. TickResult.to_robot says where it goes:
the robot while armed and, after disarming mid-motion, until the arm is at rest; the dry-run
topic otherwise. Arming ends a dry-run stream (the robot did not follow it): the next run starts
from where the robot really is.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math

import numpy as np

from vla_ros.config.safety import SafetyConfig
from vla_ros.control.chunk_scheduler import ChunkScheduler, PlannedChunk
from vla_ros.control.limits import JointLimits, MotionState, limit_step
from vla_ros.control.watchdog import HoldReason, WatchdogState, find_hold_reason
from vla_ros.errors import ConfigError
from vla_ros.types import ActionChunk

MAX_CHUNK_DT_S = 10.0  # a step period beyond this is not a control chunk (and keeps times finite)
JOINT_STATE_HISTORY = 512  # joint states kept to find the one a joint_delta chunk is relative to


class ChunkRejection(enum.Enum):
    ESTOP_LATCHED = "estop_latched"  # no chunk is accepted until reset()
    UNSUPPORTED_ACTION_SPACE = "unsupported_action_space"
    BAD_STAMP = "bad_stamp"  # stamp_ns is not an integer
    BAD_DT = "bad_dt"  # dt not finite or outside (0, MAX_CHUNK_DT_S]
    BAD_SHAPE = "bad_shape"  # actions not (H >= 1, len(names)) numbers
    NAME_MISMATCH = "name_mismatch"  # names are not the configured joints (any order)
    NON_FINITE = "non_finite"  # NaN or inf in the actions (or in a joint_delta sum)
    TOO_OLD = "too_old"  # stamp older than max_chunk_age_s on arrival: dropped
    FUTURE_STAMP = "future_stamp"  # stamp more than max_chunk_age_s ahead of now: wrong clock
    OUT_OF_ORDER = "out_of_order"  # stamp older than the last accepted chunk's
    ALL_STEPS_PAST = "all_steps_past"  # the last step was due before arrival
    NO_JOINT_STATE = "no_joint_state"  # joint_delta without a measured state near the stamp
    STARTUP_TOO_FAR = "startup_too_far"  # start-up gate: first target too far from measured
    START_OUTSIDE_LIMITS = "start_outside_limits"  # measured position outside the limits at start


@dataclasses.dataclass(frozen=True)
class ChunkVerdict:
    accepted: bool
    reason: ChunkRejection | None  # None when accepted
    message: str  # names the chunk, the value and the expectation


@dataclasses.dataclass(frozen=True)
class TickResult:
    command: np.ndarray | None  # (J,) position to send now, joint_names order; None: send nothing
    velocities_rad_s: np.ndarray  # (J,) (command - previous command) / elapsed_s; 0 if None
    state: WatchdogState
    hold_reason: HoldReason
    clipped: np.ndarray  # (J,) bool: the command differs from the plan's target (a limit acted)
    run_id: int  # the command stream this tick belongs to (limits hold within it); 0 = none
    preview_positions: np.ndarray  # (K, J) the next K commands if nothing changes (K = points - 1)
    preview_velocities_rad_s: np.ndarray  # (K, J)
    elapsed_s: float  # real time since the previous command of the run (1 period for a run's first; 0 if None)
    lead_s: float  # the command is due lead_s after the tick (time_from_start of the first point)
    period_s: float  # spacing of the preview points after the command (1 / control_rate_hz)
    to_robot: bool  # send to the robot (True) or to the dry-run topic


@dataclasses.dataclass(frozen=True)
class SafetyStatus:
    joint_names: tuple[str, ...]
    armed: bool
    estop_pressed: bool
    estop_latched: bool
    state: WatchdogState
    hold_reason: HoldReason
    run_id: int  # the current command stream, 0 = none (WAITING)
    blend_mode: str
    clip_counts: tuple[int, ...]  # per joint, joint_names order: ticks where a limit acted
    accepted_chunks: int
    rejected_chunks: dict[ChunkRejection, int]  # by reason, TOO_OLD excluded (see dropped_chunks)
    dropped_chunks: int  # chunks older than max_chunk_age_s on arrival
    refused_joint_states: int  # NaN, wrong size, missing joint or stamp beyond max_stamp_skew_s
    last_reason: str  # the newest refusal, hold or e-stop event, in words


class SafetyController:
    """Pure, single-threaded core of safety_node (the node serialises calls); times in ns."""

    def __init__(self, config: SafetyConfig) -> None:
        self._cfg = config
        self._limits = JointLimits.from_config(config)
        self._scheduler = ChunkScheduler()
        self._joint_count = len(config.joint_names)
        self._armed = config.start_armed  # what the operator asked for
        self._to_robot = config.start_armed  # where commands go now (the robot while braking after a disarm)
        self._disarming = False
        self._estop_pressed = False
        self._estop_latched = False
        self._estop_heard = False  # a message came since the last tick (heartbeat mode)
        self._estop_heard_ns: int | None = None  # tick time at which the last message had been heard
        # Joint state: the newest received (valid or not) and a history of valid ones for joint_delta.
        self._joint_received_ns: int | None = None
        self._joint_valid = True
        self._measured: np.ndarray | None = None
        self._measured_stamp_ns = 0
        self._previous: tuple[int, np.ndarray] | None = None  # (stamp ns, positions) before the newest
        # receipt - stamp of recent states: the smallest estimates the clock offset plus the least
        # latency, so stamp + it is when a state was taken, on this node's clock (a late backlog
        # of states has larger offsets and does not move it).
        self._stamp_offsets: collections.deque[int] = collections.deque(maxlen=JOINT_STATE_HISTORY)
        self._joint_history: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=JOINT_STATE_HISTORY)
        self._last_chunk_arrival_ns: int | None = None
        self._last_chunk_stamp_ns: int | None = None
        # Command stream.
        self._motion: MotionState | None = None  # None: no run (WAITING)
        self._run_id = 0
        self._following = False
        self._last_tick_ns = 0  # when the stream's last command was computed
        self._rest_ns: int | None = None  # when a held stream came to rest (None while following)
        self._lead_s = 1.0 / config.control_rate_hz  # of the current run
        self._state = WatchdogState.WAITING
        self._hold_reason = HoldReason.NO_JOINT_STATE
        # Counters.
        self._clip_counts = np.zeros(self._joint_count, dtype=np.int64)
        self._accepted = 0
        self._rejected: collections.Counter[ChunkRejection] = collections.Counter()
        self._dropped = 0
        self._refused_joint_states = 0
        self._last_reason = ""

    # ----------------------------------------------------------------------------- configuration
    @property
    def config(self) -> SafetyConfig:
        return self._cfg

    @property
    def limits(self) -> JointLimits:
        return self._limits

    def update_config(self, config: SafetyConfig) -> None:
        """Apply a validated new config from the next call (dynamic parameters; limits rebuilt).

        A change of control_rate_hz or blend.* is a stop (module docstring): the plan is dropped
        and the arm decelerates within the limits before a new run starts with the new values.
        The watchdog, age and gate thresholds apply from the next check without a stop.
        """
        if config.joint_names != self._cfg.joint_names:
            raise ConfigError(f"joint_names: cannot change from {list(self._cfg.joint_names)} to "
                              f"{list(config.joint_names)} while running (restart required)")
        if config.limits != self._cfg.limits or config.gripper != self._cfg.gripper:
            self._limits = JointLimits.from_config(config)
        old, self._cfg = self._cfg, config
        changed = [name for name, a, b in (("control_rate_hz", old.control_rate_hz, config.control_rate_hz),
                                           ("blend", old.blend, config.blend)) if a != b]
        if changed:
            self._stop(f"parameter change ({', '.join(changed)}): plan dropped, decelerating before "
                       "a new run")

    # ----------------------------------------------------------------------------- inputs
    def update_joint_state(self, positions: np.ndarray, stamp_ns: int, *, received_ns: int) -> None:
        """Measured positions (J,) in joint_names order, stamped by the robot, received at received_ns.

        NaN/inf or a wrong size makes the arm hold (JOINT_STATE_INVALID) until a valid state comes.
        A stamp more than watchdog.max_stamp_skew_s from received_ns is refused and counted: the
        state is not used at all (if no usable state follows, the stale-state hold says why).
        """
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self._joint_count,) or not np.all(np.isfinite(positions)):
            self.refuse_joint_state(stamp_ns, f"expected {self._joint_count} finite positions, got "
                                              f"{positions.tolist()}", received_ns=received_ns)
            return
        skew_s = (int(stamp_ns) - int(received_ns)) * 1e-9
        if abs(skew_s) > self._cfg.watchdog.max_stamp_skew_s:
            self._refused_joint_states += 1
            self._last_reason = (f"joint state refused: stamped {skew_s:+.3f} s from its receipt; "
                                 f"max_stamp_skew_s is {self._cfg.watchdog.max_stamp_skew_s} (are the "
                                 "robot's and this node's clocks synchronised?)")
            return
        if self._measured is not None:
            self._previous = (self._measured_stamp_ns, self._measured)
        self._measured_stamp_ns = int(stamp_ns)
        self._stamp_offsets.append(int(received_ns) - int(stamp_ns))
        self._joint_received_ns = int(received_ns)
        self._joint_valid = True
        self._measured = positions.copy()
        self._joint_history.append((int(stamp_ns), self._measured))

    def refuse_joint_state(self, stamp_ns: int, message: str, *, received_ns: int) -> None:
        """A joint state that could not be used (e.g. a joint missing from the message): hold."""
        self._refused_joint_states += 1
        if self._joint_valid:
            self._last_reason = f"joint state stamped {stamp_ns} ns refused: {message}"
        self._joint_received_ns = int(received_ns)
        self._joint_valid = False

    def add_chunk(self, chunk: ActionChunk, now_ns: int) -> ChunkVerdict:
        """Validate a chunk and add it to the plan, or refuse it whole with the reason."""
        rejection, message, targets = self._check_chunk(chunk, now_ns)
        if rejection is not None:
            return self._refuse(chunk.chunk_id, rejection, message)
        lo, hi = self._limits.position_min_rad, self._limits.position_max_rad
        self._scheduler.add(PlannedChunk(
            chunk_id=chunk.chunk_id, stamp_ns=int(chunk.stamp_ns), arrival_ns=int(now_ns),
            dt_s=float(chunk.dt_s), targets_rad=np.clip(targets, lo, hi),
            out_of_range=(targets < lo) | (targets > hi)))
        self._last_chunk_arrival_ns = int(now_ns)
        self._last_chunk_stamp_ns = int(chunk.stamp_ns)
        self._accepted += 1
        return ChunkVerdict(True, None, f"chunk {chunk.chunk_id} accepted ({targets.shape[0]} steps)")

    def refuse_malformed_chunk(self, chunk_id: int, message: str) -> ChunkVerdict:
        """Count a chunk that could not even be converted (its values do not fill horizon x names)."""
        return self._refuse(chunk_id, ChunkRejection.BAD_SHAPE, message)

    def _refuse(self, chunk_id: int, rejection: ChunkRejection, message: str) -> ChunkVerdict:
        message = f"chunk {chunk_id} refused: {message}"
        if rejection is ChunkRejection.TOO_OLD:
            self._dropped += 1
        else:
            self._rejected[rejection] += 1
        self._last_reason = message
        return ChunkVerdict(False, rejection, message)

    def _check_chunk(self, chunk: ActionChunk, now_ns: int
                     ) -> tuple[ChunkRejection | None, str, np.ndarray | None]:
        """(None, '', targets (H, J) absolute in joint order) or (reason, message, None)."""
        cfg = self._cfg
        if self._estop_latched:
            return ChunkRejection.ESTOP_LATCHED, "e-stop latched; call reset after releasing it", None
        if chunk.action_space not in ("joint_position", "joint_delta"):
            return (ChunkRejection.UNSUPPORTED_ACTION_SPACE, f"action_space {chunk.action_space!r} "
                    "is not supported; expected joint_position or joint_delta", None)
        if isinstance(chunk.stamp_ns, bool) or not isinstance(chunk.stamp_ns, (int, np.integer)):
            return ChunkRejection.BAD_STAMP, f"stamp_ns {chunk.stamp_ns!r} is not an integer", None
        dt_s = chunk.dt_s
        if not (isinstance(dt_s, (int, float, np.floating)) and not isinstance(dt_s, bool)
                and math.isfinite(dt_s) and 0.0 < dt_s <= MAX_CHUNK_DT_S):
            return ChunkRejection.BAD_DT, f"dt {dt_s!r} s must be in (0, {MAX_CHUNK_DT_S}]", None
        names = chunk.names
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
            return ChunkRejection.NAME_MISMATCH, f"names {names!r} must be a sequence of strings", None
        names = tuple(names)
        try:
            actions = np.asarray(chunk.actions, dtype=np.float64)  # (H, A)
        except (TypeError, ValueError) as err:
            return ChunkRejection.BAD_SHAPE, f"actions are not numbers: {err}", None
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != len(names):
            return (ChunkRejection.BAD_SHAPE, f"actions shape {actions.shape}; expected (H >= 1, "
                    f"{len(names)}) for names {list(names)}", None)
        if len(set(names)) != len(names) or set(names) != set(cfg.joint_names):
            return (ChunkRejection.NAME_MISMATCH, f"names {list(names)} are not the configured "
                    f"joints {list(cfg.joint_names)} (any order, each once)", None)
        if not np.all(np.isfinite(actions)):
            return ChunkRejection.NON_FINITE, "actions contain NaN or inf", None
        age_s = (now_ns - chunk.stamp_ns) * 1e-9
        if age_s > cfg.max_chunk_age_s:
            return (ChunkRejection.TOO_OLD, f"stamp is {age_s:.3f} s old; max_chunk_age_s is "
                    f"{cfg.max_chunk_age_s}", None)
        if -age_s > cfg.max_chunk_age_s:
            return (ChunkRejection.FUTURE_STAMP, f"stamp is {-age_s:.3f} s in the future (more than "
                    f"max_chunk_age_s {cfg.max_chunk_age_s}); the clocks disagree", None)
        if self._last_chunk_stamp_ns is not None and chunk.stamp_ns < self._last_chunk_stamp_ns:
            return (ChunkRejection.OUT_OF_ORDER, f"stamp {chunk.stamp_ns} ns is older than the last "
                    f"accepted chunk's {self._last_chunk_stamp_ns} ns", None)
        last_due_ns = chunk.stamp_ns + (actions.shape[0] - 1) * dt_s * 1e9
        if last_due_ns < now_ns:
            late_s = (now_ns - last_due_ns) * 1e-9
            return ChunkRejection.ALL_STEPS_PAST, f"its last step was due {late_s:.3f} s before arrival", None
        targets = actions[:, [names.index(n) for n in cfg.joint_names]]  # (H, J) joint order
        if chunk.action_space == "joint_delta":
            reference = self._joint_state_near(chunk.stamp_ns)
            if reference is None:
                return (ChunkRejection.NO_JOINT_STATE, "joint_delta needs a measured joint state within "
                        f"joint_state_timeout_s {cfg.watchdog.joint_state_timeout_s} of the stamp", None)
            offsets = reference.copy()
            if cfg.gripper.joint_name and cfg.gripper.is_absolute_in_joint_delta:
                offsets[cfg.joint_names.index(cfg.gripper.joint_name)] = 0.0
            with np.errstate(over="ignore"):
                targets = targets + offsets
            if not np.all(np.isfinite(targets)):
                return ChunkRejection.NON_FINITE, "joint_delta plus the measured state overflows", None
        return None, "", targets

    def _joint_state_near(self, stamp_ns: int) -> np.ndarray | None:
        """The valid measured state nearest in time to stamp_ns, if within joint_state_timeout_s."""
        if not self._joint_history:
            return None
        stamp, positions = min(self._joint_history, key=lambda item: abs(item[0] - stamp_ns))
        if abs(stamp - stamp_ns) > self._cfg.watchdog.joint_state_timeout_s * 1e9:
            return None
        return positions

    # ----------------------------------------------------------------------------- operator
    @property
    def armed(self) -> bool:
        """What the operator asked for (TickResult.to_robot says where each command goes)."""
        return self._armed

    def arm(self, armed: bool) -> None:
        """Send commands to the robot (True) or to the dry-run topic (False).

        Arming ends a dry-run stream: the robot did not follow it, so the next run starts from
        where the robot is (also under a latched e-stop: the robot is not moving either way).
        Disarming is a stop: a moving arm keeps receiving its braking commands until at rest,
        then the commands go to the dry-run topic.
        """
        if armed:
            if not self._to_robot:
                self._end_run()
            self._disarming = False
            self._to_robot = True
        elif self._armed or self._to_robot:
            self._stop("disarmed: plan dropped; the arm decelerates to rest before commands go to "
                       "the dry-run topic")
            if self._to_robot and self._motion is not None and not self._motion.is_at_rest:
                self._disarming = True
            else:
                self._to_robot = False
                self._end_run()
        self._armed = armed

    def estop(self, pressed: bool) -> None:
        """An e-stop message. Pressed: hold at once, drop the plan, refuse chunks; latched until reset().

        Every message also counts as a heartbeat (estop.heartbeat_timeout_s).
        """
        self._estop_heard = True
        if pressed and not self._estop_latched:
            self._last_reason = "e-stop pressed: holding until reset"
        self._estop_pressed = pressed
        if pressed:
            self._estop_latched = True
            self._following = False
            self._scheduler.clear()

    def reset(self) -> tuple[bool, str]:
        """Clear a latched e-stop; the next run starts from the measured position through the gate."""
        if self._estop_pressed:
            return False, "e-stop is still pressed: release it, then reset"
        if not self._estop_latched:
            return True, "nothing to reset: the e-stop is not latched"
        if self._motion is not None and not self._motion.is_at_rest:
            return False, "the arm is still decelerating: reset again once it is at rest"
        self._estop_latched = False
        self._end_run()
        self._last_reason = "e-stop reset"
        return True, "e-stop reset; the next chunk starts a new run through the start-up gate"

    def _current_run_id(self) -> int:
        return 0 if self._motion is None else self._run_id

    def _stop(self, message: str) -> None:
        """Drop the plan; the stream brakes to rest and a new run starts only after that."""
        self._scheduler.clear()
        self._following = False
        self._last_reason = message

    def _end_run(self) -> None:
        self._motion = None
        self._following = False
        if self._disarming:  # the braking stream that went to the robot ended
            self._disarming = False
            self._to_robot = False

    # ----------------------------------------------------------------------------- control loop
    def tick(self, now_ns: int) -> TickResult:
        """The command due now (call at control_rate_hz; now_ns on the clock chunks are stamped with).

        A call whose now_ns does not advance past the stream's last command (a repeated call, a
        clock stepped back) computes nothing: command None, elapsed_s 0.
        """
        cfg = self._cfg
        period_s = 1.0 / cfg.control_rate_hz
        if self._estop_heard:
            self._estop_heard, self._estop_heard_ns = False, now_ns
        if self._motion is not None and now_ns <= self._last_tick_ns:
            return self._result(None, 0.0, np.zeros(self._joint_count, dtype=bool), now_ns, period_s)
        elapsed_s = (now_ns - self._last_tick_ns) * 1e-9
        self._scheduler.prune(now_ns)
        reason = self._find_hold_reason(now_ns)
        if reason is HoldReason.NONE and not self._following:
            if self._motion is not None and not self._motion.is_at_rest:
                reason = HoldReason.STOPPING
            elif self._motion is not None and not self._measured_since_rest():
                reason = HoldReason.STOPPING  # the measurement may still show the arm before it stopped
            elif self._refuse_start(now_ns):
                reason = HoldReason.NO_PLAN
        clipped = np.zeros(self._joint_count, dtype=bool)
        to_robot = self._to_robot
        if reason is HoldReason.NONE:
            resume = self._motion is not None  # a held stream at rest, not WAITING
            if not self._following:  # a new run: from where the arm is measured, at rest
                seed = self._measured
                if resume and np.all(np.abs(seed - self._motion.position_rad) <= self._settle_rad()):
                    seed = self._motion.position_rad  # the arm is where the stream left it: no step at all
                self._motion = MotionState.at_rest(seed)
                self._run_id += 1
                self._lead_s = elapsed_s = period_s  # as if the seed was the last command
                self._following = True
            else:
                resume = False
            self._rest_ns = None
            if not resume:
                self._motion, clipped = self._follow(self._motion, now_ns, elapsed_s, period_s)
                self._clip_counts += clipped
            # else: a resumed run's first command is its seed, at rest: whenever its predecessor was
            # sent, the stream's timeline stays consistent (no step over a gap of unknown length).
            command: np.ndarray | None = self._motion.position_rad
        else:
            if reason is not self._hold_reason:
                self._note_hold(reason, now_ns)
                if reason not in (HoldReason.STOPPING, HoldReason.NO_PLAN):
                    self._scheduler.clear()  # chunks from before this hold are never resumed
            self._following = False
            command = None
            if self._motion is not None:
                was_at_rest = self._motion.is_at_rest
                self._motion = limit_step(self._motion, self._motion.position_rad,
                                          np.zeros(self._joint_count), self._limits, elapsed_s, period_s)
                if not (cfg.hold_mode == "silent" and was_at_rest):
                    command = self._motion.position_rad
                if self._motion.is_at_rest and self._rest_ns is None:
                    self._rest_ns = now_ns
        if self._motion is not None:
            self._last_tick_ns = now_ns
        self._hold_reason = reason
        self._state = self._watchdog_state(reason)
        result = self._result(command, elapsed_s if command is not None else 0.0, clipped, now_ns,
                              period_s, to_robot)
        if self._disarming and self._motion.is_at_rest:
            self._end_run()  # the robot is at rest; from now on commands are a dry run
        return result

    def _result(self, command: np.ndarray | None, elapsed_s: float, clipped: np.ndarray, now_ns: int,
                period_s: float, to_robot: bool | None = None) -> TickResult:
        preview_positions, preview_velocities = self._preview(now_ns, period_s, command is not None)
        velocities = (self._motion.velocity_rad_s if command is not None
                      else np.zeros(self._joint_count))
        return TickResult(command=None if command is None else command.copy(),
                          velocities_rad_s=velocities.copy(), state=self._state,
                          hold_reason=self._hold_reason, clipped=clipped, run_id=self._current_run_id(),
                          preview_positions=preview_positions,
                          preview_velocities_rad_s=preview_velocities, elapsed_s=elapsed_s,
                          lead_s=self._lead_s, period_s=period_s,
                          to_robot=self._to_robot if to_robot is None else to_robot)

    def _measured_since_rest(self) -> bool:
        """The arm is measured at rest since the held stream's last command was due (tick + lead).

        The two newest joint states were taken after that (stamp + the smallest receipt - stamp
        offset seen: a backlog delivered late under load was taken earlier than it arrived) and
        agree within one first step of a run from rest (max_acceleration * period^2 per joint).
        """
        if self._rest_ns is None or self._previous is None:
            return False
        previous_stamp_ns, previous = self._previous
        taken_ns = min(previous_stamp_ns, self._measured_stamp_ns) + min(self._stamp_offsets)
        if taken_ns <= self._rest_ns + round(self._lead_s * 1e9):
            return False
        return bool(np.all(np.abs(self._measured - previous) <= self._settle_rad()))

    def _settle_rad(self) -> np.ndarray:
        """(J,) max_acceleration * period^2: the first step of a run from rest; smaller offsets
        between measurements (noise, settling) count as the arm at rest in one place."""
        return self._limits.max_acceleration_rad_s2 / self._cfg.control_rate_hz ** 2

    def _estop_source_silent(self, now_ns: int) -> bool:
        timeout_s = self._cfg.estop.heartbeat_timeout_s
        return timeout_s > 0.0 and (self._estop_heard_ns is None
                                    or now_ns - self._estop_heard_ns > timeout_s * 1e9)

    def _find_hold_reason(self, now_ns: int) -> HoldReason:
        return find_hold_reason(
            now_ns=now_ns, is_estop_latched=self._estop_latched,
            is_estop_source_silent=self._estop_source_silent(now_ns),
            joint_state_received_ns=self._joint_received_ns if self._measured is not None else None,
            is_joint_state_valid=self._joint_valid, last_chunk_arrival_ns=self._last_chunk_arrival_ns,
            plan_covers_now=self._scheduler.covers(now_ns), cfg=self._cfg.watchdog)

    def _note_hold(self, reason: HoldReason, now_ns: int) -> None:
        """Explain a new watchdog hold in last_reason (e-stop, bad joint states and refusals explain
        themselves where they happen; running out of plan between chunks is routine)."""
        cfg = self._cfg
        if reason is HoldReason.NO_JOINT_STATE:
            self._last_reason = "hold: no joint state received yet"
        elif reason is HoldReason.JOINT_STATE_STALE:
            age_s = (now_ns - self._joint_received_ns) * 1e-9
            self._last_reason = (f"hold: no usable joint state received for {age_s:.3f} s; "
                                 f"joint_state_timeout_s is {cfg.watchdog.joint_state_timeout_s}"
                                 + (f" (last refusal: {self._last_reason})"
                                    if self._last_reason.startswith("joint state refused") else ""))
        elif reason is HoldReason.CHUNK_TIMEOUT:
            age_s = (now_ns - self._last_chunk_arrival_ns) * 1e-9
            self._last_reason = (f"hold: no chunk accepted for {age_s:.3f} s; chunk_timeout_s is "
                                 f"{cfg.watchdog.chunk_timeout_s}")
        elif reason is HoldReason.ESTOP_HEARTBEAT:
            self._last_reason = (f"hold: no message on {cfg.estop.topic} for more than "
                                 f"estop.heartbeat_timeout_s {cfg.estop.heartbeat_timeout_s}")

    def _watchdog_state(self, reason: HoldReason) -> WatchdogState:
        if self._estop_latched:
            return WatchdogState.ESTOP
        if reason is HoldReason.NONE:
            return WatchdogState.RUNNING
        return WatchdogState.WAITING if self._motion is None else WatchdogState.HOLD

    def _refuse_start(self, now_ns: int) -> bool:
        """Start-up gate before a new run (the arm is at rest); True if refused."""
        cfg, limits = self._cfg, self._limits
        measured = self._measured
        target, _ = self._scheduler.sample(now_ns, cfg.blend)
        if np.any((measured < limits.position_min_rad) | (measured > limits.position_max_rad)):
            rejection = ChunkRejection.START_OUTSIDE_LIMITS
            outside = [(n, round(float(p), 4)) for n, p, lo, hi in zip(
                cfg.joint_names, measured, limits.position_min_rad, limits.position_max_rad)
                if not lo <= p <= hi]
            message = f"measured position outside the limits {outside}: move the arm inside first"
        else:
            distance = np.abs(target - measured)
            if cfg.gripper.joint_name:
                distance[cfg.joint_names.index(cfg.gripper.joint_name)] = 0.0
            j = int(np.argmax(distance))
            if distance[j] <= cfg.startup_max_distance_rad:
                return False
            rejection = ChunkRejection.STARTUP_TOO_FAR
            message = (f"first target of {cfg.joint_names[j]} is {distance[j]:.3f} rad from the measured "
                       f"{measured[j]:.3f} rad; startup_max_distance_rad is {cfg.startup_max_distance_rad}")
        self._scheduler.clear()
        self._rejected[rejection] += 1
        self._last_reason = f"start refused, plan dropped: {message}"
        return True

    def _follow(self, motion: MotionState, now_ns: int, dt_s: float,
                period_s: float) -> tuple[MotionState, np.ndarray]:
        """One limited step, dt_s after the last, towards the plan's target due at now_ns."""
        blend = self._cfg.blend
        target, out_of_range = self._scheduler.sample(now_ns, blend)
        earlier, _ = self._scheduler.sample(now_ns - round(dt_s * 1e9), blend)
        new = limit_step(motion, target, (target - earlier) / dt_s, self._limits, dt_s, period_s)
        return new, out_of_range | (np.abs(new.position_rad - target) > 1e-9)

    def _preview(self, now_ns: int, period_s: float, has_command: bool) -> tuple[np.ndarray, np.ndarray]:
        """(K, J) positions and velocities of the next K commands, one period apart, if no input changes.

        Same limiter as tick(); the plan is followed while it covers the time (no watchdog
        timeouts are simulated), then the preview decelerates like a hold.
        """
        count = self._cfg.output.points_per_command - 1 if has_command else 0
        positions = np.zeros((count, self._joint_count))
        velocities = np.zeros((count, self._joint_count))
        motion = self._motion
        following = self._following
        for i in range(count):
            t_ns = now_ns + round((i + 1) * period_s * 1e9)
            following = following and self._scheduler.covers(t_ns)
            if following:
                motion, _ = self._follow(motion, t_ns, period_s, period_s)
            else:
                motion = limit_step(motion, motion.position_rad, np.zeros(self._joint_count),
                                    self._limits, period_s)
            positions[i], velocities[i] = motion.position_rad, motion.velocity_rad_s
        return positions, velocities

    # ----------------------------------------------------------------------------- status
    def status(self) -> SafetyStatus:
        return SafetyStatus(
            joint_names=self._cfg.joint_names, armed=self._armed, estop_pressed=self._estop_pressed,
            estop_latched=self._estop_latched, state=self._state, hold_reason=self._hold_reason,
            run_id=self._current_run_id(), blend_mode=self._cfg.blend.mode,
            clip_counts=tuple(int(c) for c in self._clip_counts), accepted_chunks=self._accepted,
            rejected_chunks=dict(self._rejected), dropped_chunks=self._dropped,
            refused_joint_states=self._refused_joint_states,
            last_reason=self._last_reason)
