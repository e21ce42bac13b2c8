"""DeepVisionPolicy: the Policy that policy_node runs, on a random tiny checkpoint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from test.model.tiny import make_observation
from vla_ros.errors import ConfigError, ObservationError
from vla_ros.model.checkpoint import create_random_checkpoint
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.normalization import FeatureStats, NormStats
from vla_ros.model.policy import DeepVisionPolicy
from vla_ros.types import Policy, PolicyOutput


@pytest.fixture
def policy(tmp_path) -> DeepVisionPolicy:
    # Physical bounds far from [-1, 1], so a missing unnormalisation cannot pass unnoticed.
    stats = NormStats(action=FeatureStats(q01=np.full(7, 10.0), q99=np.full(7, 30.0), mean=np.full(7, 20.0),
                                          std=np.full(7, 5.0)))
    return DeepVisionPolicy.from_checkpoint(create_random_checkpoint(tmp_path / "ckpt", norm_stats=stats), "cpu")


def test_is_a_policy_with_the_checkpoint_spec(policy):
    assert isinstance(policy, Policy)
    spec = policy.spec
    assert spec.joint_names == spec.action_names == DeepVisionConfig.tiny().robot.joint_names
    assert (spec.horizon, spec.action_dim, spec.dt_s, spec.action_space) == (16, 7, 0.1, "joint_position")
    assert spec.camera_names == ("front",) and spec.image_size_px == (240, 320)


def test_predict_returns_a_physical_chunk(policy):
    out = policy.predict(make_observation())
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (16, 7) and out.actions.dtype == np.float64
    assert out.kept_expert_tokens == 32  # half of the 8x8 expert patches
    assert out.info["inference_s"] > 0
    inputs = policy.processor.observations_to_inputs([make_observation()], "cpu")
    with torch.no_grad():
        normalised = policy.model(inputs).actions[0].double().numpy()
    np.testing.assert_allclose(out.actions, (normalised + 1.0) / 2.0 * 20.0 + 10.0, rtol=1e-6)


def test_batched_call_matches_single_calls(policy):
    observations = [make_observation("pick up the cube", 0), make_observation("open the drawer", 1)]
    batched = policy.predict_batch(observations)
    for obs, out in zip(observations, batched):
        np.testing.assert_allclose(out.actions, policy.predict(obs).actions, atol=1e-5)


def test_keep_ratio_changes_from_the_next_call(policy):
    policy.set_keep_ratio(0.25)
    assert policy.predict(make_observation()).kept_expert_tokens == 16
    with pytest.raises(ConfigError, match="keep_ratio"):
        policy.set_keep_ratio(1.5)
    assert policy.keep_ratio == 0.25


@pytest.mark.parametrize("obs, message", [
    (dataclasses.replace(make_observation(), instruction=""), "instruction is empty"),
    (dataclasses.replace(make_observation(), state=np.full(7, np.nan)), "not finite"),
    (dataclasses.replace(make_observation(), images=(np.zeros((240, 320, 3), np.int16),)), "int16"),
])
def test_bad_observations_raise_value_errors(policy, obs, message):
    with pytest.raises(ObservationError, match=message):
        policy.predict(obs)


def test_baseline_and_joint_delta(tmp_path):
    robot = RobotConfig(action_space="joint_delta", use_proprio=True)
    path = create_random_checkpoint(tmp_path / "base", DeepVisionConfig.tiny(baseline=True, robot=robot))
    policy = DeepVisionPolicy.from_checkpoint(path, "auto")
    assert policy.spec.action_space == "joint_delta"
    out = policy.predict(make_observation())
    assert out.kept_expert_tokens == 0 and out.actions.shape == (16, 7)
    policy.set_keep_ratio(0.3)  # accepted, no effect without an expert


# Built from the devices this machine has: on a CUDA machine the "cuda unavailable" case is absent, not skipped.
BAD_DEVICES = [("tpu", "device='tpu'"), *([] if torch.cuda.is_available() else [("cuda", "CUDA is not available")])]


@pytest.mark.parametrize("device, message", BAD_DEVICES)
def test_bad_device_is_a_config_error(tmp_path, device, message):
    with pytest.raises(ConfigError, match=message):
        DeepVisionPolicy.from_checkpoint(tmp_path, device)
