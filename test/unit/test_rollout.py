"""The goal loop's decisions (control/rollout.py) on a scripted host and a simulated clock, no ROS."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vla_ros.control.rollout import (ChunkTiming, CycleSettings, GoalLimits, Outcome, Rollout, RolloutEnd,
                                     TeleopState)
from vla_ros.errors import ObservationError, StaleObservationError
from vla_ros.types import ActionChunk, Observation, PolicyOutput, PolicySpec

SPEC = PolicySpec(joint_names=("a", "b"), action_names=("a", "b"), action_space="joint_position", horizon=3,
                  dt_s=0.1, camera_names=("front",), image_size_px=(4, 4))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a zero sleep would spin"
        self.now += seconds


@dataclasses.dataclass
class Host:
    """A scripted node: observations and actions as functions of the simulated time."""

    clock: Clock
    replan_period_s: float = 0.5
    observation_wait_s: float = 1.0
    observe_fn: object = None  # t -> Observation, or raises
    predict_fn: object = None  # obs -> actions
    stop_fn: object = None  # t -> (Outcome, str) | None
    teleop_fn: object = None  # t -> TeleopState
    inference_s: float = 0.05
    published: list = dataclasses.field(default_factory=list)
    takeover_events: list = dataclasses.field(default_factory=list)
    predicted_at: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)

    def settings(self) -> CycleSettings:
        return CycleSettings(self.replan_period_s, self.observation_wait_s)

    def stop_reason(self):
        return self.stop_fn(self.clock.now) if self.stop_fn else None

    def teleop(self) -> TeleopState:
        return self.teleop_fn(self.clock.now) if self.teleop_fn else TeleopState()

    def observe(self) -> Observation:
        if self.observe_fn:
            return self.observe_fn(self.clock.now)
        return Observation(images=(np.zeros((4, 4, 3), np.uint8),), state=np.zeros(2), instruction="go",
                           stamp_ns=int(self.clock.now * 1e9))

    def predict(self, obs: Observation) -> PolicyOutput:
        self.predicted_at.append(self.clock.now)
        self.clock.now += self.inference_s
        actions = self.predict_fn(obs) if self.predict_fn else np.full((3, 2), obs.stamp_ns * 1e-9)
        return PolicyOutput(actions=actions)

    def publish(self, chunk: ActionChunk, output: PolicyOutput, timing: ChunkTiming, interventions: int) -> None:
        self.published.append((self.clock.now, chunk, timing, interventions))

    def on_takeover(self, engaged: bool, interventions: int) -> None:
        self.takeover_events.append((self.clock.now, engaged, interventions))

    def log_error(self, text: str) -> None:
        self.errors.append(text)


def _run(host: Host, limits: GoalLimits, rollout: Rollout | None = None) -> RolloutEnd:
    rollout = rollout or Rollout(SPEC, clock=host.clock, sleep=host.clock.sleep)
    return rollout.run(limits, host)


def test_chunk_limit_completes_on_the_replan_cadence_with_increasing_ids():
    """Bugs killed: chunks computed back to back (cadence ignored), ids restarting per goal, the chunk
    stamped with the publish time instead of the observation's."""
    clock = Clock()
    host = Host(clock)
    rollout = Rollout(SPEC, clock=clock, sleep=clock.sleep)
    end = _run(host, GoalLimits(max_chunks=4), rollout)
    assert (end.outcome, end.reason, end.chunks) == (Outcome.COMPLETED, "chunk limit 4 reached", 4)
    assert np.allclose(np.diff(host.predicted_at), 0.5, atol=0.021)
    assert [c.chunk_id for _, c, _, _ in host.published] == [1, 2, 3, 4]
    for t_pub, chunk, timing, _ in host.published:
        assert chunk.stamp_ns == pytest.approx((t_pub - 0.05) * 1e9, abs=1)
        assert timing.inference_s == pytest.approx(0.05)
    _run(host, GoalLimits(max_chunks=1), rollout)
    assert host.published[-1][1].chunk_id == 5


def test_time_limit_completes_and_a_live_period_change_applies_next_cycle():
    clock = Clock()
    host = Host(clock)

    def observe(t):
        if t > 1.2:
            host.replan_period_s = 0.25
        return Host(clock).observe()

    host.observe_fn = observe
    end = _run(host, GoalLimits(time_limit_s=3.0))
    assert end.outcome == Outcome.COMPLETED and end.reason == "time limit 3.0 s reached"
    gaps = np.diff(host.predicted_at)
    assert gaps[0] == pytest.approx(0.5, abs=0.021) and gaps[-1] == pytest.approx(0.25, abs=0.021)


def test_stale_observation_is_waited_for_then_aborts_naming_the_source():
    """Bug killed: aborting on the first stale observation (a camera one frame late kills the goal), or
    waiting forever."""
    clock = Clock()

    def observe(t):
        if t < 0.6:
            raise StaleObservationError("/camera/image_raw is 0.7 s old")
        return Host(clock).observe()

    host = Host(clock, observe_fn=observe)
    assert _run(host, GoalLimits(max_chunks=1)).outcome == Outcome.COMPLETED
    assert host.predicted_at[0] >= 0.6

    clock = Clock()
    host = Host(clock, observe_fn=lambda t: (_ for _ in ()).throw(StaleObservationError("/joint_states is old")))
    end = _run(host, GoalLimits(max_chunks=1))
    assert end.outcome == Outcome.ABORTED and "no fresh observation: /joint_states is old" in end.reason
    assert 1.0 < clock.now < 1.1


@pytest.mark.parametrize("case, expected", [
    ("bad_observation", "bad observation: joint_3 is NaN"),
    ("policy_raises", "policy error: RuntimeError: CUDA out of memory"),
    ("nan_actions", "policy error: non-finite or mis-shaped actions"),
    ("wrong_shape", "policy error: non-finite or mis-shaped actions"),
    ("not_numbers", "policy error: non-finite or mis-shaped actions"),
])
def test_bad_observations_and_policy_failures_abort_with_the_reason(case, expected):
    clock = Clock()
    host = Host(clock)
    if case == "bad_observation":
        host.observe_fn = lambda t: (_ for _ in ()).throw(ObservationError("joint_3 is NaN"))
    elif case == "policy_raises":
        host.predict_fn = lambda obs: (_ for _ in ()).throw(RuntimeError("CUDA out of memory"))
    else:
        host.predict_fn = {"nan_actions": lambda obs: np.full((3, 2), np.nan),
                           "wrong_shape": lambda obs: np.zeros((2, 3)),
                           "not_numbers": lambda obs: [["x", "y"]] * 3}[case]
    end = _run(host, GoalLimits(max_chunks=3))
    assert (end.outcome, end.reason, end.chunks) == (Outcome.ABORTED, expected, 0)
    assert not host.published
    assert bool(host.errors) == (case != "bad_observation")


def test_stop_reasons_end_the_goal_with_their_outcome():
    """Cancel, preemption, shutdown and a latched e-stop all come through stop_reason, checked every cycle."""
    clock = Clock()
    host = Host(clock, stop_fn=lambda t: (Outcome.ABORTED, "safety_node reports the e-stop latched") if t > 1.1 else None)
    end = _run(host, GoalLimits())
    assert (end.outcome, end.reason) == (Outcome.ABORTED, "safety_node reports the e-stop latched")
    assert end.chunks == 3 and clock.now < 1.15
    clock = Clock()
    end = _run(Host(clock, stop_fn=lambda t: (Outcome.CANCELED, "canceled")), GoalLimits())
    assert (end.outcome, end.chunks) == (Outcome.CANCELED, 0)


def test_teleop_takeover_pauses_counts_and_resumes_from_a_post_release_observation():
    """Bugs killed: chunks computed while a person holds the arm (two sources fighting), an observation
    from before the release used after it (the policy jumps back to where the arm was), interventions
    not counted."""
    clock = Clock()

    def teleop(t):
        if 1.0 <= t < 2.0:
            return TeleopState(engaged=True, takeovers=1)
        return TeleopState(engaged=False, takeovers=0 if t < 1.0 else 1, released_ns=0 if t < 2.0 else int(2.0e9))

    def observe(t):  # the camera lags 0.3 s: the first observations after the release predate it
        return dataclasses.replace(Host(clock).observe(), stamp_ns=int((t - 0.3) * 1e9))

    host = Host(clock, teleop_fn=teleop, observe_fn=observe)
    end = _run(host, GoalLimits(time_limit_s=3.0))
    assert not any(1.0 <= t < 2.3 for t in host.predicted_at)
    assert min(t for t in host.predicted_at if t >= 2.0) == pytest.approx(2.3, abs=0.021)
    assert (end.interventions, round(end.intervention_s, 1)) == (1, 1.0)
    assert [(round(t, 1), engaged, n) for t, engaged, n in host.takeover_events] == [(1.0, True, 1), (2.0, False, 1)]
    assert host.published[-1][3] == 1


def test_a_takeover_under_way_when_the_goal_starts_counts_and_ending_during_it_counts_its_time():
    clock = Clock()
    host = Host(clock, teleop_fn=lambda t: TeleopState(engaged=True, takeovers=5))
    end = _run(host, GoalLimits(time_limit_s=1.0))
    assert (end.outcome, end.chunks, end.interventions) == (Outcome.COMPLETED, 0, 1)
    assert end.intervention_s == pytest.approx(1.0, abs=0.02)


def test_a_chunk_computed_while_a_person_took_over_is_not_published():
    """Bug killed: a takeover arriving during the inference still lets that chunk out, so the policy and the
    person command the arm at once (two sources fighting through safety_node)."""
    clock = Clock()
    host = Host(clock, inference_s=0.2,
                teleop_fn=lambda t: TeleopState(engaged=0.6 <= t < 0.65, takeovers=0 if t < 0.6 else 1,
                                                released_ns=0 if t < 0.65 else int(0.65e9)))
    end = _run(host, GoalLimits(time_limit_s=1.2))
    assert host.predicted_at[1] == pytest.approx(0.5, abs=0.021)  # its inference spans the takeover
    assert not [t for t, *_ in host.published if 0.6 <= t < 0.75]  # the chunk inferred from 0.5 to 0.7
    resumed = [chunk.stamp_ns for t, chunk, *_ in host.published if t >= 0.75]
    assert resumed and min(resumed) > 0.65e9 and end.interventions == 1  # from an observation after the release
