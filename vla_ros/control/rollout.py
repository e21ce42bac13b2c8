"""The policy goal loop's decisions, without ROS: when to stop, when to wait, when to infer, what to publish.

policy_node is an adapter over this (as safety_node is over control/safety.py): it answers the host
questions below from its subscriptions, action server and parameters, and turns RolloutEnd into the
RunPolicy result. Each cycle, in order:
1. stop?      cancel, preemption, shutdown or a latched e-stop (host.stop_reason) end the goal;
              the time limit and the chunk limit complete it;
2. teleop?    while a person has taken over, no chunk is computed (takeovers and their time are
              counted); after the hand-back only an observation newer than the release is used,
              so the policy restarts from where the person left the arm;
3. cadence    one chunk per replan period (short sleeps keep cancel responsive);
4. observe    a stale observation is waited for up to observation_wait_s, then the goal aborts
              naming the stale source; a bad observation aborts at once;
5. infer      a policy exception, or actions that are not a finite (H, A) array, abort the goal;
6. publish    the chunk (stamped with the observation's time) with its timing, unless a person took
              over while it was computed.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import traceback
from typing import Callable, Protocol

import numpy as np

from vla_ros.errors import ObservationError, StaleObservationError
from vla_ros.types import ActionChunk, Observation, PolicyOutput, PolicySpec

STALE_RETRY_S = 0.01  # how soon a stale or pre-release observation is asked for again
MAX_SLEEP_S = 0.02  # longest sleep between stop checks


class Outcome(enum.IntEnum):
    """Same values as RunPolicy.Result.OUTCOME_*."""

    COMPLETED = 0
    CANCELED = 1
    ABORTED = 2


@dataclasses.dataclass(frozen=True)
class GoalLimits:
    time_limit_s: float = 0.0  # 0: none
    max_chunks: int = 0  # 0: none


@dataclasses.dataclass(frozen=True)
class CycleSettings:
    """Read once per cycle, so a live parameter change applies from the next cycle."""

    replan_period_s: float
    observation_wait_s: float


@dataclasses.dataclass(frozen=True)
class TeleopState:
    engaged: bool = False
    takeovers: int = 0  # engagements since the node started
    released_ns: int = 0  # observation-clock time of the last release


@dataclasses.dataclass
class RolloutEnd:
    outcome: Outcome
    reason: str
    chunks: int = 0
    interventions: int = 0
    intervention_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class ChunkTiming:
    """Seconds spent building the observation (decode, resize) and in the policy for one chunk."""

    observe_s: float
    inference_s: float


class RolloutHost(Protocol):
    """What the loop asks the node. Every method is called from the goal's thread."""

    def settings(self) -> CycleSettings: ...

    def stop_reason(self) -> tuple[Outcome, str] | None: ...

    def teleop(self) -> TeleopState: ...

    def observe(self) -> Observation: ...  # raises StaleObservationError / ObservationError

    def predict(self, obs: Observation) -> PolicyOutput: ...

    def publish(self, chunk: ActionChunk, output: PolicyOutput, timing: ChunkTiming, interventions: int) -> None: ...

    def on_takeover(self, engaged: bool, interventions: int) -> None: ...

    def log_error(self, text: str) -> None: ...


class Rollout:
    """Runs goals one after another for one policy; chunk ids increase across goals."""

    def __init__(self, spec: PolicySpec, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self._clock = clock
        self._sleep = sleep
        self._chunk_id = 0

    def run(self, limits: GoalLimits, host: RolloutHost) -> RolloutEnd:
        start = self._clock()
        end = RolloutEnd(Outcome.COMPLETED, "")
        first = host.teleop()
        takeovers_before = first.takeovers - int(first.engaged)  # one under way counts
        seen_takeovers = first.takeovers
        paused_since: float | None = None
        resume_after_ns = -1
        waiting_since: float | None = None
        next_cycle = start
        try:
            while True:
                settings = host.settings()
                stop = host.stop_reason()
                if stop is not None:
                    end.outcome, end.reason = stop
                    return end
                now = self._clock()
                if limits.time_limit_s > 0 and now - start >= limits.time_limit_s:
                    end.reason = f"time limit {limits.time_limit_s:.1f} s reached"
                    return end
                if limits.max_chunks > 0 and end.chunks >= limits.max_chunks:
                    end.reason = f"chunk limit {limits.max_chunks} reached"
                    return end
                teleop = host.teleop()
                end.interventions = teleop.takeovers - takeovers_before
                if teleop.engaged:
                    if paused_since is None:
                        paused_since = now
                        host.on_takeover(True, end.interventions)
                    self._sleep(STALE_RETRY_S)
                    continue
                if paused_since is not None:  # handed back: resume from where the arm is now
                    end.intervention_s += now - paused_since
                    paused_since, resume_after_ns, next_cycle, waiting_since = None, teleop.released_ns, now, None
                    host.on_takeover(False, end.interventions)
                elif teleop.takeovers != seen_takeovers:  # a takeover came and went between two looks
                    resume_after_ns, next_cycle, waiting_since = teleop.released_ns, now, None
                seen_takeovers = teleop.takeovers
                if now < next_cycle:
                    self._sleep(min(next_cycle - now, MAX_SLEEP_S))
                    continue
                observe_start = self._clock()
                try:
                    obs = host.observe()
                except StaleObservationError as err:
                    waiting_since = now if waiting_since is None else waiting_since
                    if now - waiting_since > settings.observation_wait_s:
                        return self._abort(end, f"no fresh observation: {err}")
                    next_cycle = now + STALE_RETRY_S
                    continue
                except ObservationError as err:
                    return self._abort(end, f"bad observation: {err}")
                if obs.stamp_ns <= resume_after_ns:  # seen while the person still moved the arm
                    next_cycle = now + STALE_RETRY_S
                    continue
                waiting_since = None
                infer_start = self._clock()
                try:
                    output = host.predict(obs)
                except Exception as err:  # the goal aborts with the message; the node keeps serving
                    host.log_error(f"policy raised:\n{traceback.format_exc()}")
                    return self._abort(end, f"policy error: {type(err).__name__}: {err}")
                timing = ChunkTiming(observe_s=infer_start - observe_start, inference_s=self._clock() - infer_start)
                chunk = self.make_chunk(obs.stamp_ns, output.actions)
                if chunk is None:
                    host.log_error(f"policy returned actions of shape {np.shape(output.actions)} (expected "
                                   f"{(self.spec.horizon, self.spec.action_dim)}) or non-finite values")
                    return self._abort(end, "policy error: non-finite or mis-shaped actions")
                after = host.teleop()
                if after.engaged or after.takeovers != teleop.takeovers:
                    continue  # a person took over during the inference: this chunk must not reach the arm
                host.publish(chunk, output, timing, end.interventions)
                end.chunks += 1
                next_cycle = max(next_cycle + settings.replan_period_s, self._clock())
        finally:
            if paused_since is not None:  # the goal ended during a takeover
                end.intervention_s += self._clock() - paused_since

    def make_chunk(self, stamp_ns: int, actions: np.ndarray) -> ActionChunk | None:
        """The policy's actions as the next chunk, or None unless they are a finite (H, A) array."""
        spec = self.spec
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if actions.shape != (spec.horizon, spec.action_dim) or not np.all(np.isfinite(actions)):
            return None
        self._chunk_id += 1
        return ActionChunk(chunk_id=self._chunk_id, stamp_ns=stamp_ns, action_space=spec.action_space,
                           names=tuple(spec.action_names), dt_s=spec.dt_s, actions=actions)

    @staticmethod
    def _abort(end: RolloutEnd, reason: str) -> RolloutEnd:
        end.outcome, end.reason = Outcome.ABORTED, reason
        return end
