"""DaggerSupervisor (vla_ros.sim.dagger) on the simulated arm without ROS: a policy that goes astray is
taken over, the expert finishes the stage and hands back; a policy on the expert's path is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.config import from_flat
from vla_ros.config.sim import SimConfig
from vla_ros.sim.arm_sim import ArmSim
from vla_ros.sim.dagger import DaggerSupervisor, resample_path
from vla_ros.sim.experts import make_expert

SMALL = {"camera.height_px": 96, "camera.width_px": 128}
RATE_HZ = 20.0


@pytest.fixture(scope="module")
def sim():
    with ArmSim(from_flat(SimConfig, SMALL)) as arm:
        yield arm


def _run(sim, task: str, seed: int, policy, duration_s: float = 25.0):
    """policy(state) -> target; the supervisor's target wins while it is engaged. Returns (log, result)."""
    sim.reset(seed=seed, task=task)
    supervisor = DaggerSupervisor(sim.config, task, deviation_rad=0.3, stall_s=2.0)
    log = []
    while sim.time_s < duration_s:
        state = sim.state()
        success = sim.task_result().success
        action = supervisor.step(state, success)
        log.append(action)
        if success and not action.engaged:
            break
        sim.set_position_targets(action.target if action.engaged else policy(state))
        sim.step(1.0 / RATE_HZ)
    return log, sim.task_result(), supervisor


def test_resample_path_bounds_the_step():
    knots = np.array([[0.0] * 7, [1.0, -0.5, 0, 0, 0, 0, 1.0]])
    path = resample_path(knots, 0.02)
    assert np.abs(np.diff(path[:, :6], axis=0)).max() <= 0.02 + 1e-12
    np.testing.assert_allclose(path[[0, -1]], knots)


@pytest.mark.parametrize("task", ["pour", "write"])
def test_a_policy_that_drifts_away_is_taken_over_and_the_expert_completes_the_task(sim, task):
    """Catches a supervisor that never takes over (no corrections recorded), one that never hands back,
    or a take-over that cannot finish the task from mid-episode."""
    drift = np.array([0.02, -0.02, 0.0, 0.0, 0.0, 0.0, 0.0])
    log, result, supervisor = _run(sim, task, 5, lambda state: np.asarray(state.joint_positions) + drift)
    assert supervisor.takeovers >= 1 and any(a.reason.startswith("deviation") for a in log)
    assert result.success, result.details
    assert not log[-1].engaged  # handed back


def test_the_expert_itself_is_never_taken_over(sim):
    """Catches a deviation measure that flags the expert's own motion (every episode would be a takeover)."""
    expert = make_expert(sim.config, "pour")
    log, result, supervisor = _run(sim, "pour", 6, expert.act)
    assert result.success and supervisor.takeovers == 0, max(a.deviation_rad for a in log)
