"""ONNX export of the whole step and of the vision parts at tiny size, checked against torch on ORT's CPU provider."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from test.model.tiny import make_frames, make_inputs, make_model, make_processor
from vla_ros.errors import ConfigError
from vla_ros.model import onnx_export
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig

# fp32 on both sides; ORT fuses LayerNorm/GELU/attention and sums in another order, so not bitwise.
REL_TOLERANCE = 1e-4  # max |onnx - torch| / max |torch|, per output


@pytest.mark.parametrize("part", onnx_export.PARTS)
def test_exported_part_agrees_with_torch_on_onnx_runtime_cpu(part, tmp_path):
    config = DeepVisionConfig.tiny(robot=RobotConfig(camera_names=("front", "wrist")))  # 2 images per sample
    model = make_model(config)
    inputs = make_inputs(make_processor(config), batch=1)
    module = onnx_export.part_module(model, part)
    pixels = onnx_export.part_input(inputs, part)
    path = onnx_export.export_part(module, pixels, tmp_path / f"{part}.onnx")
    session = onnx_export.session(path, threads=1)

    other = onnx_export.part_input(make_inputs(make_processor(config), batch=1, seed=7), part)  # not the trace input
    with torch.no_grad():
        reference = module(other)
    outputs = onnx_export.run_session(session, other)
    result = onnx_export.agreement(reference, outputs)
    assert result.within(REL_TOLERANCE), result
    expected_outputs = 1 + len(config.vlm.vision.deepstack_visual_indexes) if part == "vla_vision" else 1
    assert len(outputs) == expected_outputs


def test_vision_part_is_the_models_own_vision_tower(tiny_model, tiny_processor):
    inputs = make_inputs(tiny_processor, batch=1)
    with torch.no_grad():
        pooled, deepstack = onnx_export.part_module(tiny_model, "vla_vision")(inputs.vla_pixels)
        tokens, features = tiny_model._visual_tokens(inputs)
    torch.testing.assert_close(pooled, tokens[0], atol=0, rtol=0)
    torch.testing.assert_close(deepstack, features[0][0], atol=0, rtol=0)


def test_half_precision_copy_leaves_the_model_alone(tiny_model):
    module = onnx_export.part_module(tiny_model, "expert_shallow", dtype=torch.float16)
    assert next(module.parameters()).dtype == torch.float16
    assert next(tiny_model.parameters()).dtype == torch.float32


def test_bad_requests_are_refused(tiny_processor, tmp_path):
    baseline = make_model(DeepVisionConfig.tiny(baseline=True))
    with pytest.raises(ConfigError, match="expert_shallow"):
        onnx_export.part_module(baseline, "expert_shallow")
    with pytest.raises(ConfigError, match="'llm'"):
        onnx_export.part_module(baseline, "llm")
    with pytest.raises(ConfigError, match="providers"):
        onnx_export.session(tmp_path / "missing.onnx", providers=("NoSuchExecutionProvider",))


# ---- the whole inference step ----

@pytest.mark.parametrize("baseline", [False, True], ids=["deepvision", "baseline"])
def test_whole_step_matches_the_eager_forward_on_other_inputs(baseline, tmp_path):
    """The exported step (vision, expert, shallow LLM + AGVP top-K, coupled layers, head) run by ONNX Runtime
    equals DeepVisionVLA.forward on inputs it was not traced with: other pixels, state and instruction (another
    padding pattern in the same bucket). Catches values of the trace input baked into the graph (masks, MRoPE
    positions, the kept set), an op lowered with other semantics (top-K order, gather, index_copy/index_add),
    and ORT kernels that are missing (the boolean EyeLike the mask used to need)."""
    config = DeepVisionConfig.tiny(baseline=baseline, robot=RobotConfig(camera_names=("front", "wrist"),
                                                                         use_proprio=True))
    model = make_model(config)
    processor = make_processor(config)
    example = processor(make_frames(config, batch=1, seed=0), ["pick up the red cube"], torch.zeros(1, 7))
    step = onnx_export.PolicyStep(model, example, keep_ratio=0.25).eval()
    path = onnx_export.export_step(step, example, tmp_path / "step.onnx")
    session = onnx_export.provider_session(path, onnx_export.providers_for("cpu"), threads=1)

    other = processor(make_frames(config, batch=1, seed=7), ["open it"], torch.randn(1, 7))
    assert other.input_ids.shape == example.input_ids.shape and not torch.equal(other.prompt_valid,
                                                                               example.prompt_valid)
    with torch.no_grad():
        reference = model(other, keep_ratio=0.25)
    outputs = session.run(None, onnx_export.step_feed(other, np.float32))
    assert onnx_export.agreement(reference.actions, outputs[:1]).within(REL_TOLERANCE)
    if baseline:
        assert len(outputs) == 1
    else:
        assert outputs[1].shape == (1, 2, model.kept_patches_per_camera(0.25))
        np.testing.assert_array_equal(outputs[1], reference.kept_patch_index.numpy())


def test_cache_lives_beside_a_writable_checkpoint_else_in_the_user_cache(tmp_path, monkeypatch):
    """Exports go beside the checkpoint when it can be written and to $XDG_CACHE_HOME/vla_ros/onnx otherwise
    (a checkpoint on a read-only mount must not stop the ONNX backend). The unwritable case is an `onnx` file in
    the way: file modes would not stop root, which runs these tests in CI."""
    monkeypatch.delenv(onnx_export.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    writable, blocked = tmp_path / "writable", tmp_path / "blocked"
    writable.mkdir()
    blocked.mkdir()
    (blocked / "onnx").write_text("not a directory")
    assert onnx_export.cache_root(writable) == (writable / "onnx", "beside the checkpoint")
    root, why = onnx_export.cache_root(blocked)
    assert root.parent == tmp_path / "xdg" / "vla_ros" / "onnx" and root.name.startswith("blocked-")
    assert "read-only" in why
    monkeypatch.setenv(onnx_export.CACHE_ENV, str(tmp_path / "override"))
    assert onnx_export.cache_root(writable)[0].parent == tmp_path / "override"


def test_providers_refuse_a_gpu_device_without_a_gpu_build():
    """device=cuda on the CPU-only onnxruntime must refuse with the reason, not quietly run on the CPU."""
    if set(onnx_export.GPU_PROVIDERS) & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider")
    with pytest.raises(ConfigError, match="neither TensorRT nor CUDA"):
        onnx_export.providers_for("cuda")
    assert onnx_export.providers_for("auto") == [(onnx_export.CPU_PROVIDER, {})]
