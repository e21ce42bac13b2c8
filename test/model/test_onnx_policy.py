"""OnnxPolicy (the onnxruntime backend) on tiny checkpoints: same chunks and kept patches as the torch policy,
exports cached beside the checkpoint and rebuilt when the checkpoint or the shape changes."""

from __future__ import annotations

import numpy as np
import pytest

from test.model.tiny import make_observation
from vla_ros.errors import ConfigError
from vla_ros.model import onnx_export
from vla_ros.model.checkpoint import create_random_checkpoint
from vla_ros.model.onnx_policy import OnnxPolicy
from vla_ros.model.policy import DeepVisionPolicy, build_policy

REL_TOLERANCE = 1e-4  # fp32 on both sides, as test_onnx_export


@pytest.fixture(autouse=True)
def _cache_beside_the_checkpoint(monkeypatch):
    monkeypatch.delenv(onnx_export.CACHE_ENV, raising=False)


def _assert_same_as_torch(onnx_policy: OnnxPolicy, checkpoint, obs) -> None:
    torch_policy = DeepVisionPolicy.from_checkpoint(checkpoint, device="cpu")
    torch_policy.set_keep_ratio(onnx_policy.keep_ratio)
    expected, got = torch_policy.predict(obs), onnx_policy.predict(obs)
    scale = np.abs(expected.actions).max()
    assert np.abs(got.actions - expected.actions).max() <= REL_TOLERANCE * scale
    assert got.kept_expert_tokens == expected.kept_expert_tokens
    np.testing.assert_array_equal(onnx_policy.kept_patch_indices(obs), torch_policy.kept_patch_indices(obs))


def test_exports_are_cached_and_rebuilt_when_the_checkpoint_changes(tmp_path):
    """A second start serves from the cache without exporting; new weights in the same directory (a retrained
    checkpoint) are exported again. Catches a cache keyed on the path or the shapes alone, which would keep
    serving the old weights after a retrain."""
    checkpoint = create_random_checkpoint(tmp_path / "ckpt", seed=0)
    obs = make_observation("pick up the cube", seed=3)
    first = build_policy(checkpoint, device="cpu", backend="onnxruntime")
    assert first.exported == ["step_b1_c1_p57_k32_float32"] and first.provider == "CPUExecutionProvider"
    assert first.cache.root == checkpoint / "onnx" and first.describe()["onnx_cache_location"] == "beside the checkpoint"
    _assert_same_as_torch(first, checkpoint, obs)

    again = OnnxPolicy(checkpoint, device="cpu")
    assert again.exported == []  # served from the cache
    np.testing.assert_array_equal(again.predict(obs).actions, first.predict(obs).actions)

    create_random_checkpoint(checkpoint, seed=1)  # retrained in place
    retrained = OnnxPolicy(checkpoint, device="cpu")
    assert retrained.exported == ["step_b1_c1_p57_k32_float32"]
    assert np.abs(retrained.predict(obs).actions - first.predict(obs).actions).max() > 1e-3
    _assert_same_as_torch(retrained, checkpoint, obs)


def test_new_keep_ratio_and_damaged_entry_are_exported_again(tmp_path):
    """A live keep_ratio change serves the new K from its own export (not the old K's graph), and a damaged
    cache file is exported again instead of stopping the node."""
    checkpoint = create_random_checkpoint(tmp_path / "ckpt", seed=0)
    obs = make_observation("pick up the cube")
    policy = OnnxPolicy(checkpoint, device="cpu", keep_ratio=0.5)
    policy.set_keep_ratio(0.25)
    assert policy.predict(obs).kept_expert_tokens == 16
    assert policy.exported == ["step_b1_c1_p57_k32_float32", "step_b1_c1_p57_k16_float32"]
    assert policy.kept_patch_indices(obs).shape == (1, 16)

    damaged = policy.cache.root / "step_b1_c1_p57_k32_float32" / onnx_export.MODEL_FILE
    damaged.write_bytes(b"not an onnx model")
    restarted = OnnxPolicy(checkpoint, device="cpu", keep_ratio=0.5)
    assert restarted.exported == ["step_b1_c1_p57_k32_float32"]
    _assert_same_as_torch(restarted, checkpoint, obs)


def test_bad_backend_and_device_are_refused(tmp_path):
    checkpoint = create_random_checkpoint(tmp_path / "ckpt", seed=0)
    with pytest.raises(ConfigError, match="inference_backend"):
        build_policy(checkpoint, device="cpu", backend="tensorflow")
    if not set(onnx_export.GPU_PROVIDERS) & set(onnx_export.ort.get_available_providers()):
        with pytest.raises(ConfigError, match="neither TensorRT nor CUDA"):
            build_policy(checkpoint, device="cuda", backend="onnxruntime")
