"""The whole loop over real DDS: policy_node -> safety_node -> sim_robot_node -> recorder_node.

Each node runs in its own process, as in the demo. The policy is a random-weight DeepVision-VLA
whose normalisation bounds sit around the sim's home pose, so its chunks pass the start gate and
move the arm without any training.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.config import load_config
from vla_ros.config.safety import SafetyConfig
from vla_ros.config.sim import HOME_POSITIONS
from vla_ros.model.checkpoint import create_random_checkpoint
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.normalization import NormStats
from vla_ros.paths import config_file
from vla_ros.recording.reader import LeRobotDatasetReader
from vla_ros.apps.session import SimSession


@pytest.fixture(scope="module")
def near_home_checkpoint(tmp_path_factory):
    home = np.asarray(HOME_POSITIONS)
    samples = home + np.random.default_rng(0).uniform(-0.25, 0.25, size=(256, home.size))
    samples[:, -1] = np.clip(samples[:, -1], 0.0, 1.0)
    stats = NormStats.from_arrays(samples, states=samples)
    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "near_home", DeepVisionConfig.tiny(),
                                    norm_stats=stats)


def test_closed_loop_moves_arm_within_limits_and_records(tmp_path, near_home_checkpoint):
    limits = load_config(config_file("sim.yaml"), "safety_node", SafetyConfig).limits
    dataset = tmp_path / "dataset"
    with SimSession(tmp_path / "logs", checkpoint_dir=str(near_home_checkpoint), device="cpu", record=True,
                    dataset_root=str(dataset), startup_timeout_s=120.0) as session:
        report = session.run_episode("pour", seed=3, time_limit_s=4.0)
    assert report.outcome == "completed", report.reason
    assert report.chunks > 5 and report.commands_sent > 20
    assert report.joint_travel_rad > 0.01, "the arm did not move"
    commands = np.stack(report.commands)
    lo, hi = np.asarray(limits.position_min_rad), np.asarray(limits.position_max_rad)
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= lo - 1e-9) and np.all(commands <= hi + 1e-9), "a command left the position limits"
    # Consecutive commands 1/control_rate apart respect the velocity limit (loose: messages can be lost).
    steps = np.abs(np.diff(commands, axis=0))
    max_step = np.asarray(limits.max_velocity_rad_s) / 50.0
    assert np.all(steps <= max_step * 3 + 1e-9), f"largest step {steps.max():.4f} rad"
    reader = LeRobotDatasetReader(dataset)
    assert reader.num_episodes == 1
    table = reader.episode_table(0)
    assert len(table["frame_index"]) > 10
    assert np.asarray(table["observation.state"]).shape[1] == 7
