"""The forward's static-shape groundwork: no host reads, HF-equal vision tower, GQA without enable_gqa,
a fixed patch selection, and stage timing hooks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from test.model.tiny import make_inputs, make_model, make_processor
from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.modeling_deepvision import STAGE_PREFIX, STAGES

TWO_CAMERAS = DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True, camera_names=("front", "wrist")))


def test_static_vision_tower_equals_transformers_forward():
    """Kills: precomputed grid tables or the batched per-image attention diverging from HF's vision tower."""
    model = make_model(TWO_CAMERAS)
    inputs = make_inputs(make_processor(TWO_CAMERAS))  # batch 2 x 2 cameras: HF loops over 4 images
    visual = model.vlm.visual
    grid = backbones.qwen_vision_grid(visual, 4, 4, torch.device("cpu"))  # 64 px / 16 px patches
    with torch.no_grad():
        pooled, deepstack = backbones.qwen_vision_forward(visual, inputs.vla_pixels, grid)
        reference = visual(inputs.vla_pixels, grid_thw=torch.tensor([[1, 4, 4]] * 4), return_dict=True)
    torch.testing.assert_close(pooled, reference.pooler_output, atol=0, rtol=0)
    assert len(deepstack) == len(reference.deepstack_features) == 1
    torch.testing.assert_close(deepstack[0], reference.deepstack_features[0], atol=0, rtol=0)


def test_repeated_kv_heads_give_the_same_attention_as_enable_gqa():
    """Kills: a key/value head mapping other than SDPA's grouped-query one (e.g. interleaved repeats)."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 10, 16, generator=generator)
    k, v = torch.randn(2, 2, 2, 10, 16, generator=generator)
    mask = torch.rand(2, 1, 10, 10, generator=generator) > 0.3
    mask |= torch.eye(10, dtype=torch.bool)  # no empty row
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    repeated = F.scaled_dot_product_attention(q, backbones.repeat_kv_heads(k, 8), backbones.repeat_kv_heads(v, 8),
                                              attn_mask=mask)
    torch.testing.assert_close(repeated, expected, atol=0, rtol=0)
    assert backbones.repeat_kv_heads(k, 2) is k


@pytest.mark.parametrize("config", [DeepVisionConfig.tiny(), DeepVisionConfig.tiny(baseline=True), TWO_CAMERAS],
                         ids=["deepvision", "baseline", "proprio_two_cameras"])
def test_forward_reads_no_device_value_on_the_host(config):
    """A .tolist()/.item()/nonzero() in the step would stall the GPU and break CUDA-graph capture; fake tensors
    have no values, so any such read raises here. The first real call fills the per-device caches (warm-up)."""
    model = make_model(config)
    inputs = make_inputs(make_processor(config), batch=1)
    with torch.no_grad():
        model(inputs)
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake = dataclasses.replace(inputs, **{field.name: mode.from_tensor(getattr(inputs, field.name))
                                              for field in dataclasses.fields(inputs)
                                              if getattr(inputs, field.name) is not None})
        with mode:
            out = model(fake)
    assert out.actions.shape == (1, 16, 7)


def test_fixed_kept_patch_index_reproduces_agvp_and_skips_the_saliency(tiny_model, tiny_processor):
    """Kills: a caller's patch selection that is ignored or overridden by AGVP."""
    inputs = make_inputs(tiny_processor)
    with torch.no_grad():
        agvp = tiny_model(inputs)
        fixed = tiny_model(inputs, kept_patch_index=agvp.kept_patch_index)
        other = tiny_model(inputs, kept_patch_index=torch.arange(32).expand(2, 1, 32).contiguous())
    torch.testing.assert_close(fixed.actions, agvp.actions, atol=0, rtol=0)
    assert fixed.saliency is None and agvp.saliency is not None
    assert not torch.equal(agvp.kept_patch_index, other.kept_patch_index)
    assert (other.actions - agvp.actions).abs().max() > 1e-6


@pytest.mark.parametrize("index", [torch.zeros(2, 1, 0, dtype=torch.long), torch.zeros(2, 1, 65, dtype=torch.long),
                                   torch.zeros(1, 1, 8, dtype=torch.long), torch.zeros(2, 1, 8)],
                         ids=["empty", "more_than_patches", "wrong_batch", "float"])
def test_fixed_kept_patch_index_of_the_wrong_shape_is_refused(tiny_model, tiny_processor, index):
    with pytest.raises(ConfigError, match="kept_patch_index"), torch.no_grad():
        tiny_model(make_inputs(tiny_processor), kept_patch_index=index)


@pytest.mark.parametrize("baseline", [False, True], ids=["deepvision", "baseline"])
def test_profiler_ranges_wrap_every_stage_in_order(baseline):
    """Bug killed: a stage left out of (or mislabelled in) the per-stage timing that bench_gpu reports, or the
    ranges changing the result: with a profiler recording, forward() opens one range per stage, in order,
    and returns the same actions as without."""
    config = DeepVisionConfig.tiny(baseline=baseline)
    model = make_model(config)
    inputs = make_inputs(make_processor(config))
    with torch.no_grad():
        untimed = model(inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            timed = model(inputs)
    torch.testing.assert_close(timed.actions, untimed.actions, atol=0, rtol=0)
    seen = [e.name[len(STAGE_PREFIX):] for e in sorted(prof.events(), key=lambda e: e.time_range.start)
            if e.name.startswith(STAGE_PREFIX)]
    expected = [s for s in STAGES if not baseline or s not in ("expert_shallow", "agvp", "coupled")]
    assert list(dict.fromkeys(seen)) == expected
    assert seen.count("llm_shallow") >= config.vlm.text.num_layers - config.coupling.num_layers
