"""The /sim/state JSON carries everything a scripted expert reads: an expert fed the decoded state acts the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vla_ros.sim  # noqa: F401  (MUJOCO_GL before mujoco)
from vla_ros.config.sim import SimConfig
from vla_ros.errors import ObservationError
from vla_ros.sim.arm_sim import ArmSim
from vla_ros.sim.experts import make_expert
from vla_ros.sim.state_json import state_from_dict, state_to_dict


@pytest.fixture(scope="module")
def sim():
    with ArmSim(SimConfig()) as arm:
        yield arm


def _through_json(sim: ArmSim):
    cfg = sim.config
    return state_from_dict(json.loads(json.dumps(state_to_dict(sim.state(), cfg.joint_names, cfg.max_velocity_rad_s))))


@pytest.mark.parametrize("task", ["pour", "write"])
def test_expert_acts_the_same_on_the_decoded_state(sim, task) -> None:
    sim.reset(seed=5, task=task)
    direct, decoded = make_expert(sim.config, task), make_expert(sim.config, task)
    for _ in range(60):  # through the reach into the grasp
        state = sim.state()
        target = direct.act(state)
        np.testing.assert_allclose(decoded.act(_through_json(sim)), target, atol=1e-9)
        sim.set_position_targets(target)
        sim.step(0.05)
    state, copy = sim.state(), _through_json(sim)
    assert copy.grasped_object == state.grasped_object
    assert copy.task.instruction == state.task.instruction and copy.task.seed == 5
    for name, (position, rotation) in state.object_poses.items():
        np.testing.assert_allclose(copy.object_poses[name][0], position)
        np.testing.assert_allclose(copy.object_poses[name][1], rotation)


def test_write_layout_survives(sim) -> None:
    sim.reset(seed=2, task="write")
    copy = _through_json(sim)
    assert copy.task.letter == sim.task.letter
    np.testing.assert_allclose(copy.task.letter_xy, sim.task.letter_xy)


@pytest.mark.parametrize("damage, pattern", [
    (lambda d: d.pop("tcp_position"), "tcp_position"),
    (lambda d: d.update(joint_positions=[0.0] * 3), "joint_positions"),
    (lambda d: d.update(tcp_rotation=[[float("nan")] * 3] * 3), "tcp_rotation"),
    (lambda d: d.pop("object_poses"), "object poses"),
    (lambda d: d.update(joint_names=[]), "joint_names"),
])
def test_malformed_state_is_refused_by_name(sim, damage, pattern) -> None:
    data = state_to_dict(sim.state(), sim.config.joint_names, sim.config.max_velocity_rad_s)
    damage(data)
    with pytest.raises(ObservationError, match=pattern):
        state_from_dict(data)


def test_non_object_is_refused() -> None:
    with pytest.raises(ObservationError, match="JSON object"):
        state_from_dict([1, 2, 3])
