"""Scripted experts complete both tasks; doing nothing or acting randomly does not. IK round trip."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.config import from_flat
from vla_ros.config.sim import SIM_JOINT_NAMES, SimConfig
from vla_ros.errors import ConfigError
from vla_ros.sim.arm_sim import ArmSim
from vla_ros.sim.experts import make_expert, run_expert_episode
from vla_ros.sim.kinematics import ArmKinematics

SMALL = {"camera.height_px": 96, "camera.width_px": 128}


@pytest.fixture(scope="module")
def sim():
    with ArmSim(from_flat(SimConfig, SMALL)) as arm:
        yield arm


@pytest.mark.parametrize("task", ["pour", "write"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_succeeds(sim, task: str, seed: int) -> None:
    sim.reset(seed=seed, task=task)
    targets = []
    result = run_expert_episode(sim, make_expert(sim.config, task), control_rate_hz=20.0,
                                on_step=lambda state, target: targets.append(target))
    assert result.success, result.details
    assert sim.time_s <= 12.0
    assert np.asarray(targets).shape[1] == 7


def test_expert_works_at_another_control_rate_and_joint_order() -> None:
    names = list(reversed(SIM_JOINT_NAMES))
    cfg = from_flat(SimConfig, SMALL | {"joint_names": names, "task": "write", "seed": 4,
                                        "initial_positions": list(reversed(SimConfig().initial_positions)),
                                        "max_velocity_rad_s": list(reversed(SimConfig().max_velocity_rad_s))})
    with ArmSim(cfg) as arm:
        result = run_expert_episode(arm, make_expert(cfg), control_rate_hz=10.0)
        assert result.success, result.details


def test_written_letter_is_visible_in_the_image(sim) -> None:
    sim.reset(seed=1, task="write")
    before = sim.render()
    run_expert_episode(sim, make_expert(sim.config, "write"))
    lift = sim.joint_positions()
    lift[1] -= 0.4  # swing the arm back so it does not hide the sheet
    sim.set_position_targets(lift)
    sim.step(1.0)
    after = sim.render()
    ink = (after.astype(int).sum(axis=-1) < 450) & (before.astype(int).sum(axis=-1) > 600)
    assert np.count_nonzero(ink) > 5  # dark ink where there was white paper


@pytest.mark.parametrize("task", ["pour", "write"])
def test_doing_nothing_or_acting_randomly_fails(sim, task: str) -> None:
    sim.reset(seed=0, task=task)
    sim.step(10.0)
    assert not sim.task_result().success
    rng = np.random.default_rng(0)
    lower, upper = sim.joint_limits()
    sim.reset(seed=0, task=task)
    for _ in range(40):
        sim.set_position_targets(rng.uniform(lower, upper))
        sim.step(0.25)
    result = sim.task_result()
    assert not result.success and result.score < 0.5, result.details


def test_expert_refuses_the_other_task(sim) -> None:
    sim.reset(seed=0, task="pour")
    with pytest.raises(ConfigError, match="this is the 'write' expert, the sim runs 'pour'"):
        make_expert(sim.config, "write").act(sim.state())
    with pytest.raises(ConfigError, match="no expert for 'juggle'"):
        make_expert(sim.config, "juggle")


def test_ik_recovers_reachable_poses() -> None:
    kin = ArmKinematics()
    rng = np.random.default_rng(1)
    home = np.asarray(SimConfig().initial_positions[:6])
    for _ in range(20):
        q_true = home + rng.uniform(-0.4, 0.4, size=6)
        position, rotation = kin.forward(q_true)
        solution = kin.solve(position, rotation, home)
        assert solution.is_within(1e-3, 1e-2), solution
