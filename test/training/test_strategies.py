"""strategy=lora (peft), activation checkpointing, the memory plan, and refusals before any work."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from test.model.tiny import make_inputs, make_processor
from test.training.tiny import tiny_train_config
from vla_ros.errors import ConfigError
from vla_ros.model.checkpoint import load_checkpoint
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.training import plan, strategy
from vla_ros.training.config import TrainConfig
from vla_ros.training.distributed import DistContext
from vla_ros.training.trainer import Trainer, train

_NEW = re.compile(r"(pairs|proprio|action_head)\.")


def _tiny(seed: int = 0) -> DeepVisionVLA:
    torch.manual_seed(seed)
    return DeepVisionVLA(DeepVisionConfig.tiny())


def _grads(model: DeepVisionVLA) -> dict[str, torch.Tensor]:
    processor = make_processor(model.config)
    model.train()
    out = model(make_inputs(processor, batch=2), target_actions=torch.ones(2, model.config.robot.chunk_size,
                                                                            model.config.robot.action_dim))
    out.loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_gradients():
    """Catches a checkpointed layer step that drops an argument or recomputes differently (wrong gradients)."""
    plain = _grads(_tiny())
    model = _tiny()
    calls = []
    model.layer_call = lambda fn, *args: calls.append(fn) or strategy.checkpointed_call(fn, *args)
    checkpointed = _grads(model)
    config = model.config
    # every vision block, expert shallow layer, shallow LLM layer and coupled pair went through the hook
    assert len(calls) == (config.vlm.vision.depth + config.expert.num_layers - config.coupling.num_layers
                          + config.vlm.text.num_layers)
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_lora_gradients_reach_only_adapters_and_new_modules():
    """Catches base weights left trainable under LoRA, or new modules (aligners, head) frozen with them."""
    model = _tiny()
    strategy.apply_lora(model, rank=4, alpha=8, dropout=0.0, targets=("llm", "expert_coupled"),
                        freeze_vision_tower=False, freeze_expert_shallow=False)
    grads = _grads(model)
    for name, parameter in model.named_parameters():
        expected = ".lora_" in name or bool(_NEW.match(name))
        assert parameter.requires_grad == expected, name
        if not expected:
            assert name not in grads, name
    assert any(".lora_" in n and "language_model" in n for n in grads)
    assert any(".lora_" in n and "expert.model.layer.3" in n for n in grads)  # a coupled expert layer
    assert not any(".lora_" in n and "expert.model.layer.0" in n for n in model.state_dict())  # a shallow one
    assert any(n.startswith("pairs.") for n in grads) and any(n.startswith("action_head.") for n in grads)


def test_lora_run_saves_resumes_and_merges(recorded_dataset, tmp_path):
    """Catches adapters lost or mis-named on save/load, base weights that move, and a merged checkpoint whose
    actions differ from the adapter model's."""
    settings = dict(strategy="lora", lora_rank=4, steps=4, save_every=2, keep_last_checkpoints=0, batch_size=4)
    trainer = Trainer(tiny_train_config(recorded_dataset, tmp_path / "full", **settings))
    try:
        full = trainer.run()
        adapter_model = trainer.objective.model.eval()
        merged = load_checkpoint(full.final_checkpoint)  # the plain checkpoint policy_node loads
        processor = merged.processor
        inputs = make_inputs(processor, batch=2)
        with torch.no_grad():
            unmerged_actions = adapter_model(inputs).actions
            merged_actions = merged.model(inputs).actions
    finally:
        trainer.close()
    torch.testing.assert_close(merged_actions, unmerged_actions, rtol=1e-5, atol=1e-5)
    adapter = full.final_checkpoint / strategy.ADAPTER_DIR
    saved = load_file(adapter / strategy.ADAPTER_WEIGHTS)
    assert json.loads((adapter / strategy.ADAPTER_CONFIG).read_text())["r"] == 4
    assert any(".lora_A." in k for k in saved) and any(k.startswith("model.action_head.") for k in saved)
    plain = load_file(full.final_checkpoint / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in plain)
    first = load_file(tmp_path / "full/checkpoints/step_00000002/model.safetensors")
    assert not torch.equal(plain["vlm.language_model.layers.0.self_attn.q_proj.weight"],
                           first["vlm.language_model.layers.0.self_attn.q_proj.weight"])  # adapters merged in
    assert torch.equal(plain["vlm.visual.blocks.0.attn.qkv.weight"], first["vlm.visual.blocks.0.attn.qkv.weight"])

    stopped_config = tiny_train_config(recorded_dataset, tmp_path / "stopped", **settings)
    trainer = Trainer(stopped_config)
    try:
        trainer.run(until_step=2)
    finally:
        trainer.close()
    resumed = train(stopped_config, resume="latest")
    again = load_file(resumed.final_checkpoint / strategy.ADAPTER_DIR / strategy.ADAPTER_WEIGHTS)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    assert [e["loss"] for e in resumed.entries] == [e["loss"] for e in full.entries]


def test_plan_parameter_bytes_equal_the_real_tiny_model():
    """Catches a plan that counts parameters differently from the model it plans for (meta vs real)."""
    cfg = DeepVisionConfig.tiny()
    real = _tiny()
    ddp = plan.plan_memory(cfg, TrainConfig(strategy="ddp", precision="fp32", batch_size=2), gpus=1, cuda=False)
    assert ddp.parameter_bytes_total == sum(p.numel() * p.element_size() for p in real.parameters())
    assert ddp.bytes["parameters"] == ddp.parameter_bytes_total
    assert ddp.bytes["activations"] > 0
    lora_config = TrainConfig(strategy="lora", precision="fp32", lora_rank=4, batch_size=2)
    lora = plan.plan_memory(cfg, lora_config, gpus=1, cuda=False)
    strategy.apply_lora(real, 4, lora_config.lora_alpha, 0.0, lora_config.lora_targets, False, False)
    assert lora.total_parameters == sum(p.numel() for p in real.parameters())
    assert lora.trainable_parameters == sum(p.numel() for p in real.parameters() if p.requires_grad)
    full = plan.plan_memory(cfg, TrainConfig(strategy="full", precision="fp32", batch_size=2), gpus=2, cuda=False)
    assert full.bytes["parameters"] == -(-ddp.parameter_bytes_total // 2)


def test_paper_plan(tmp_path, capsys):
    """The done-when numbers: paper-size LoRA on one 24 GiB GPU at batch 1, FSDP2 on 8 x 80 GiB at batch 8."""
    cases = {"lora_1x24": ["--strategy", "lora", "--gpus", "1", "--gpu-memory-gib", "24", "--batch-size", "1"],
             "full_8x80": ["--strategy", "full", "--gpus", "8", "--gpu-memory-gib", "80", "--batch-size", "8"]}
    for name, args in cases.items():
        path = tmp_path / f"{name}.json"
        with capsys.disabled():  # the table goes to the test log
            print()
            assert plan.main(["--model", "paper", *args, "--json", str(path)]) == 0
        saved = json.loads(path.read_text())
        assert saved["fits"] and saved["total_parameters"] > 5.4e9 and saved["activation_checkpointing"]


def test_bad_strategy_world_size_or_target_is_refused_before_work(recorded_dataset, tmp_path, monkeypatch):
    """Catches a misconfigured run that starts reading data or writing a run directory before failing."""
    with pytest.raises(ConfigError, match="strategy"):
        TrainConfig(strategy="zero3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2"):
        DistContext.from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        Trainer(tiny_train_config(recorded_dataset, tmp_path / "run"))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    with pytest.raises(ConfigError, match="attention_typo"):
        Trainer(tiny_train_config(recorded_dataset, tmp_path / "run", strategy="lora",
                                  lora_targets=("llm", "attention_typo")))
    with pytest.raises(ConfigError, match="will not fit"):
        Trainer(tiny_train_config(recorded_dataset, tmp_path / "run", gpu_memory_gib=0.5))
    assert not (tmp_path / "run").exists()
    assert plan.main(["--model", "tiny", "--gpus", "0", "--json", ""]) == 2
