"""StaticInference and the policy's fast path on CPU: exactly the eager forward, one instance per shape.

The CUDA-graph branch needs a GPU; bench/bench_gpu.py checks it against the eager forward there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test.model.tiny import make_inputs, make_model, make_observation, make_processor
from vla_ros.errors import ObservationError
from vla_ros.model.checkpoint import create_random_checkpoint
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.fast_inference import StaticInference, input_signature
from vla_ros.model.policy import DeepVisionPolicy

CONFIGS = {"deepvision": DeepVisionConfig.tiny(), "baseline": DeepVisionConfig.tiny(baseline=True),
           "proprio_two_cameras": DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True,
                                                                          camera_names=("front", "wrist")))}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_static_forward_equals_the_eager_forward_for_new_inputs(name):
    config = CONFIGS[name]
    model, processor = make_model(config), make_processor(config)
    static = StaticInference(model, make_inputs(processor, seed=0), keep_ratio=0.25)
    assert not static.uses_cuda_graph and not static.uses_expert_stream
    for seed in (1, 2):  # values differ from the example: the buffers must be refilled each call
        inputs = make_inputs(processor, seed=seed)
        with torch.no_grad():
            eager = model(inputs, keep_ratio=0.25)
        fast = static(inputs)
        torch.testing.assert_close(fast.actions, eager.actions, atol=0, rtol=0)
        torch.testing.assert_close(fast.last_hidden_state, eager.last_hidden_state, atol=0, rtol=0)
        if config.expert is not None:
            assert torch.equal(fast.kept_patch_index, eager.kept_patch_index)
            assert fast.kept_patch_index.shape[-1] == 16  # K fixed by the instance's keep ratio


def test_static_forward_with_a_fixed_selection_equals_the_eager_one(tiny_model, tiny_processor):
    index = torch.arange(0, 64, 4).expand(2, 1, 16).contiguous()
    static = StaticInference(tiny_model, make_inputs(tiny_processor), kept_patch_index=index)
    inputs = make_inputs(tiny_processor, seed=3)
    with torch.no_grad():
        eager = tiny_model(inputs, kept_patch_index=index)
    torch.testing.assert_close(static(inputs).actions, eager.actions, atol=0, rtol=0)


def test_inputs_of_another_shape_are_refused(tiny_model, tiny_processor):
    static = StaticInference(tiny_model, make_inputs(tiny_processor, batch=2))
    one = make_inputs(tiny_processor, batch=1)
    with pytest.raises(ObservationError, match="input_ids"):
        static(one)
    assert input_signature(one) != static.signature


def test_policy_fast_path_equals_eager_and_keeps_one_instance_per_shape(tmp_path):
    path = create_random_checkpoint(tmp_path / "ckpt", DeepVisionConfig.tiny())
    eager = DeepVisionPolicy.from_checkpoint(path, "cpu")
    fast = DeepVisionPolicy.from_checkpoint(path, "cpu", fast_inference=True)
    assert not eager.fast_inference and fast.fast_inference  # CPU default is eager
    observations = [make_observation("pick up the cube", 0), make_observation("open the drawer", 1),
                    make_observation("put the red block into the box on the left", 2)]  # 42 bytes: next bucket
    for obs in observations:
        np.testing.assert_array_equal(fast.predict(obs).actions, eager.predict(obs).actions)
    assert len(fast._static) == 2  # two instruction buckets
    fast.set_keep_ratio(0.25)
    eager.set_keep_ratio(0.25)
    np.testing.assert_array_equal(fast.predict(observations[0]).actions, eager.predict(observations[0]).actions)
    assert len(fast._static) == 3  # a new K is a new static shape
