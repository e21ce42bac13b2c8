"""ONNX export of the vision parts at tiny size, checked against torch on ONNX Runtime's CPU provider."""

from __future__ import annotations

import pytest
import torch

from test.model.tiny import make_inputs, make_model, make_processor
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
