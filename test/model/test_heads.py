"""The three action heads (oft_mlp, vla_adapter, vlm4vla): each with and without the expert, and the
mechanisms that define them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from test.model.tiny import make_inputs, make_model, make_processor
from vla_ros.errors import ConfigError
from vla_ros.model.checkpoint import load_checkpoint, save_checkpoint
from vla_ros.model.configuration import DeepVisionConfig, HeadConfig, RobotConfig
from vla_ros.model.heads import BridgeAttentionHead, HeadInputs

HEADS = ("oft_mlp", "vla_adapter", "vlm4vla")


def _config(head: str, baseline: bool = False, use_proprio: bool = False, **head_fields) -> DeepVisionConfig:
    base = DeepVisionConfig.tiny(baseline=baseline, robot=RobotConfig(chunk_size=4, use_proprio=use_proprio))
    fields = {"bridge_num_heads": 4, **head_fields}
    if head == "vla_adapter":
        fields.setdefault("num_query_tokens", 6)
    return dataclasses.replace(base, head=HeadConfig(name=head, **fields))


@pytest.mark.parametrize("baseline", [False, True], ids=["deepvision", "baseline"])
@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_and_predicts_with_and_without_the_expert(head: str, baseline: bool) -> None:
    """A head that breaks the forward (wrong query count, unused states) fails here: finite actions of the
    chunk's shape, and one optimiser step lowers the loss on a fixed batch."""
    config = _config(head, baseline=baseline)
    model = make_model(config).train()
    inputs = make_inputs(make_processor(config))
    target = torch.randn(2, config.robot.chunk_size, config.robot.action_dim, generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        out = model(inputs, target_actions=target)
        assert out.actions.shape == target.shape and torch.isfinite(out.actions).all()
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("head", ["vla_adapter", "vlm4vla"])
def test_query_heads_append_their_learned_queries_to_the_vlm_input(head: str) -> None:
    """Bug killed: query tokens left as zeros (OFT's action tokens) instead of learned embeddings, or the
    sequence not carrying Q tokens: the queries get gradients and changing them changes the actions."""
    config = _config(head, num_query_tokens=3)
    model = make_model(config)
    inputs = make_inputs(make_processor(config))
    out = model(inputs)
    assert out.last_hidden_state.shape[1] == inputs.input_ids.shape[1] + 3
    out.actions.sum().backward()
    assert model.action_head.queries.grad is not None and model.action_head.queries.grad.abs().sum() > 0
    with torch.no_grad():
        before = model(inputs).actions
        model.action_head.queries.add_(1.0)
        assert not torch.allclose(model(inputs).actions, before)


def _bridge_model(gate: float) -> tuple[torch.nn.Module, object]:
    config = _config("vla_adapter", use_proprio=True)
    model = make_model(config)
    with torch.no_grad():
        for block in model.action_head.blocks:
            block.gate.fill_(gate)
    return model, make_inputs(make_processor(config))


def _perturb_raw(head: BridgeAttentionHead, inputs: HeadInputs, which: str) -> HeadInputs:
    """Add noise to the raw vision-language states ('raw') or the ActionQuery states ('query') of every layer."""
    num_q = head.num_query_tokens
    noise = torch.randn(inputs.layer_states[0].shape, generator=torch.Generator().manual_seed(7)) * 5.0
    keep = torch.zeros_like(noise[..., :1])
    if which == "raw":
        keep = inputs.prompt_tokens[..., None].to(noise.dtype)
    else:
        keep[:, -num_q:] = 1.0
    return dataclasses.replace(inputs, layer_states=tuple(s + noise * keep for s in inputs.layer_states))


def _head_inputs(model, inputs) -> HeadInputs:
    captured: dict[str, HeadInputs] = {}
    head = model.action_head
    original = head.forward
    head.forward = lambda head_inputs: captured.setdefault("x", head_inputs) and original(head_inputs)
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        head.forward = original
    return captured["x"]


def test_bridge_gate_at_zero_is_actionquery_only_and_open_gate_reads_raw_features() -> None:
    """Bugs killed: the raw vision-language path ignored (gate opened but raw states unused) or not gated
    (raw features leak in with the gate closed). Gate 0: raw states change nothing, ActionQuery states do;
    gate open: the raw states change the actions."""
    torch.manual_seed(0)
    closed, inputs = _bridge_model(gate=0.0)
    head_inputs = _head_inputs(closed, inputs)
    head = closed.action_head
    with torch.no_grad():
        base = head(head_inputs)
        assert torch.allclose(head(_perturb_raw(head, head_inputs, "raw")), base, atol=1e-6)
        assert not torch.allclose(head(_perturb_raw(head, head_inputs, "query")), base, atol=1e-3)
        for block in head.blocks:
            block.gate.fill_(1.0)
        opened = head(head_inputs)
        assert not torch.allclose(head(_perturb_raw(head, head_inputs, "raw")), opened, atol=1e-3)
    assert torch.allclose(head.gates(), torch.full((len(head.blocks),), torch.tanh(torch.tensor(1.0)).item()))


def test_bridge_reads_every_layer_by_default_and_the_chosen_layers_otherwise() -> None:
    """Bug killed: all blocks reading one layer (the 'all-layer' finding lost): perturbing any single layer's
    states changes the actions when every layer is bridged; bridge_layers picks the blocks."""
    config = _config("vla_adapter")
    model = make_model(config)
    assert model.action_head.layers == tuple(range(config.vlm.text.num_layers))
    inputs = make_inputs(make_processor(config))
    head_inputs = _head_inputs(model, inputs)
    head = model.action_head

    def bump(layer: int) -> HeadInputs:
        states = list(head_inputs.layer_states)
        noise = torch.randn(states[layer].shape, generator=torch.Generator().manual_seed(layer))
        states[layer] = states[layer] + noise  # not a constant shift: the blocks' LayerNorms remove those
        return dataclasses.replace(head_inputs, layer_states=tuple(states))

    with torch.no_grad():
        base = head(head_inputs)
        for layer in range(config.vlm.text.num_layers):
            assert not torch.allclose(head(bump(layer)), base, atol=1e-4), f"layer {layer} is not read"
    chosen = make_model(_config("vla_adapter", bridge_layers=(1, 3)))
    assert chosen.action_head.layers == (1, 3) and len(chosen.action_head.blocks) == 2


def test_vlm4vla_maps_the_query_states_to_the_whole_chunk() -> None:
    """Bug killed: the MLP reading the prompt's last token instead of the query token(s): only the query
    rows of the final hidden states may matter."""
    config = _config("vlm4vla", num_query_tokens=2)
    model = make_model(config)
    head_inputs = _head_inputs(model, make_inputs(make_processor(config)))
    with torch.no_grad():
        base = model.action_head(head_inputs)
        moved = dataclasses.replace(head_inputs, query_hidden=head_inputs.query_hidden + 1.0)
        assert base.shape == (2, config.robot.chunk_size, config.robot.action_dim)
        assert not torch.allclose(model.action_head(moved), base)


@pytest.mark.parametrize("head", HEADS)
def test_heads_save_and_load(tmp_path, head: str) -> None:
    """A head whose parameters are not saved (or a config field lost in config.json) changes the actions
    after a round trip."""
    config = _config(head)
    model = make_model(config)
    processor = make_processor(config)
    save_checkpoint(model, processor.norm_stats, processor.tokenizer, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").model
    inputs = make_inputs(processor)
    with torch.no_grad():
        assert torch.equal(model(inputs).actions, loaded(inputs).actions)
    assert loaded.config.head == config.head


@pytest.mark.parametrize("fields, message", [
    ({"name": "diffusion"}, "head.name"),
    ({"name": "oft_mlp", "num_query_tokens": 4}, "head.num_query_tokens"),
    ({"name": "vla_adapter", "bridge_layers": (2, 1)}, "head.bridge_layers"),
    ({"name": "vla_adapter", "bridge_layers": (0, 9)}, "head.bridge_layers"),
    ({"name": "vla_adapter", "bridge_num_heads": 5}, "head.bridge_num_heads"),
])
def test_bad_head_config_is_refused_with_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(DeepVisionConfig.tiny(), head=HeadConfig(**fields))
