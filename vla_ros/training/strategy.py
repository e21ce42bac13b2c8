"""How a run holds and trains the model: `ddp` (a whole fp32 copy per process), `full` (FSDP2 shards) or
`lora` (peft adapters on frozen base weights), plus activation checkpointing per layer for all three.

FSDP2 units. DeepVisionVLA runs its layers through their submodules (decoder_layer_forward calls
`layer.input_layernorm`, `layer.self_attn.q_proj`, ...; a coupled pair reads its LLM and expert layers' weights
inside CoupledLayerPair.forward), so the layer modules' own forward() never runs and FSDP's hooks on them would
never fire: the parameters would stay sharded (or, left to the root, would never be sharded at all). Each unit
is therefore the list of the modules that do run (`fully_shard([...])` groups them under one all-gather): every
module that owns parameters in one LLM or vision layer, and for a coupled layer its CoupledLayerPair (called
first, so its inputs z and e carry the unit's post-backward hook) together with the LLM layer's and the expert
layer's modules: the coupled LLM layer and its expert layer share one attention and shard as one unit.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vla_ros.errors import CheckpointError, ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA

log = logging.getLogger(__name__)

STRATEGIES = ("ddp", "full", "lora")
AC_MODES = ("auto", "on", "off")
AC_AUTO_MIN_PARAMETERS = 500_000_000  # "auto" checkpoints activations from this model size on (paper: 5.48 B)
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # LoRA adapters + every fully trained new module
ADAPTER_CONFIG = "adapter_config.json"
SHARDED_DIR = "sharded"  # training_state/sharded: torch.distributed.checkpoint of model + optimizer

# ---- LoRA targets: named parts of the model, or a regular expression over DeepVisionVLA module names ----
_LLM_LINEAR = r"self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj"
_EXPERT_LINEAR = r"attention\.(q|k|v|o)_proj|mlp\.\w+_proj"
LORA_TARGET_PARTS = ("llm", "expert_coupled", "expert_shallow", "vision_tower")


def expert_layer_indices(config: DeepVisionConfig) -> tuple[list[int], list[int]]:
    """(shallow, coupled) expert layer indices."""
    if config.expert is None:
        return [], []
    first = config.expert.num_layers - config.coupling.num_layers
    return list(range(first)), list(range(first, config.expert.num_layers))


def _alternatives(indices: list[int]) -> str:
    return "|".join(str(i) for i in indices) or "(?!)"


def lora_target_regex(config: DeepVisionConfig, targets: tuple[str, ...], freeze_vision_tower: bool,
                      freeze_expert_shallow: bool) -> str:
    """One regex (peft full-matches it against module names) for the parts or patterns in `targets`."""
    shallow, coupled = expert_layer_indices(config)
    parts = {"llm": rf"vlm\.language_model\.layers\.\d+\.({_LLM_LINEAR})",
             "expert_coupled": rf"expert\.model\.layer\.({_alternatives(coupled)})\.({_EXPERT_LINEAR})",
             "expert_shallow": rf"expert\.model\.layer\.({_alternatives(shallow)})\.({_EXPERT_LINEAR})",
             "vision_tower": r"vlm\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])"}
    if not targets:
        raise ConfigError(f"lora_targets is empty: name parts {LORA_TARGET_PARTS} or module-name regexes")
    frozen = {"vision_tower": freeze_vision_tower, "expert_shallow": freeze_expert_shallow}
    for target in targets:
        if frozen.get(target):
            raise ConfigError(f"lora_targets names {target!r}, but freeze_{target} is on: drop one of them")
    return "|".join(f"({parts.get(target, target)})" for target in targets)


def check_lora_targets(model: nn.Module, config: DeepVisionConfig, targets: tuple[str, ...],
                       freeze_vision_tower: bool = False, freeze_expert_shallow: bool = False) -> str:
    """The regex of `targets`; ConfigError naming any target that matches no nn.Linear of `model`."""
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for target in targets:
        pattern = lora_target_regex(config, (target,), freeze_vision_tower, freeze_expert_shallow)
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"lora_targets {target!r} is neither a part {LORA_TARGET_PARTS} nor a valid "
                              f"regex: {err}") from err
        if not any(compiled.fullmatch(name) for name in linear_names):
            raise ConfigError(f"lora_targets {target!r} matches no Linear module of this model: name a part "
                              f"{LORA_TARGET_PARTS} or a regex over module names such as "
                              f"{linear_names[len(linear_names) // 2]!r}")
    return lora_target_regex(config, targets, freeze_vision_tower, freeze_expert_shallow)


# ---- freezing and activation checkpointing (every strategy) ----

def freeze_parts(model: DeepVisionVLA, vision_tower: bool, expert_shallow: bool) -> int:
    """requires_grad off for the Qwen3-VL vision tower and/or the expert's uncoupled layers (and embeddings);
    returns the number of parameters frozen."""
    modules: list[nn.Module] = []
    if vision_tower:
        modules.append(model.vlm.visual)
    if expert_shallow and model.expert is not None:
        shallow, _ = expert_layer_indices(model.config)
        layers = backbones.expert_layers(model.expert)
        modules += [model.expert.embeddings, *(layers[i] for i in shallow)]
    count = 0
    for module in modules:
        for parameter in module.parameters():
            count += parameter.numel() if parameter.requires_grad else 0
            parameter.requires_grad_(False)
    return count


def activation_checkpointing_enabled(mode: str, num_parameters: int) -> bool:
    if mode not in AC_MODES:
        raise ConfigError(f"activation_checkpointing={mode!r}: must be one of {AC_MODES}")
    return mode == "on" or (mode == "auto" and num_parameters >= AC_AUTO_MIN_PARAMETERS)


def checkpointed_call(fn: Callable[..., Any], *args: Any) -> Any:
    """DeepVisionVLA.layer_call that keeps only each layer's inputs and recomputes the rest in backward."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False)


# ---- FSDP2 (strategy full) ----

def _owners(*modules: nn.Module, skip: set[nn.Module] = frozenset()) -> list[nn.Module]:
    """Every module under `modules` that owns parameters itself (the modules a layer step really calls)."""
    out: list[nn.Module] = []
    for root in modules:
        for module in root.modules():
            if module not in skip and any(True for _ in module.parameters(recurse=False)):
                out.append(module)
    return out


def fsdp_units(model: DeepVisionVLA) -> list[list[nn.Module]]:
    """The FSDP2 units of DeepVisionVLA, in forward order (see the module docstring)."""
    cfg = model.config
    if model.expert is not None and cfg.coupling.share_aligners:
        raise ConfigError("strategy=full needs one aligner set per coupled pair (coupling.share_aligners=false): "
                          "a shared pair cannot belong to every coupled layer's unit")
    units: list[list[nn.Module]] = [[model.vlm.language_model.embed_tokens]]
    units += [_owners(block) for block in model.vlm.visual.blocks]
    layers = backbones.text_layers(model.vlm)
    coupled_llm = cfg.coupled_llm_layers if model.expert is not None else range(0)
    if model.expert is not None:
        expert_layers = backbones.expert_layers(model.expert)
        shallow, coupled = expert_layer_indices(cfg)
        units += [[expert_layers[i]] for i in shallow]  # called as modules (layer(tokens, ...))
    for index, llm_layer in enumerate(layers):
        if index not in coupled_llm:
            units.append(_owners(llm_layer))
            continue
        j = index - coupled_llm.start
        expert_layer, pair = expert_layers[coupled[j]], model.pairs[j]
        unused: list[nn.Module] = []
        if pair.align_q is None:  # the last pair never updates the expert stream: most of its layer never runs
            used = {expert_layer.norm1, expert_layer.attention.k_proj, expert_layer.attention.v_proj}
            unused = [m for m in _owners(expert_layer) if m not in used]  # module order: the same on every rank
        units.append([pair, *_owners(llm_layer), *_owners(expert_layer, skip=set(unused))])
        if unused:
            units.append(unused)  # its own unit: stays sharded, never gathered
    return units


def shard_full(objective: nn.Module, model: DeepVisionVLA, mesh: Any, bf16: bool) -> None:
    """fully_shard every unit, then the root (everything else: embeddings of the towers, norms, head, ...).

    bf16: parameters all-gathered in bf16, gradients reduced in fp32, fp32 master weights and optimizer state.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for unit in fsdp_units(model):
        fully_shard(unit if len(unit) > 1 else unit[0], mesh=mesh, mp_policy=policy)
    # The root keeps the targets and the mask as given (fp32): the loss is computed in fp32.
    root_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                        cast_forward_inputs=False) if bf16 else policy)
    fully_shard(objective, mesh=mesh, mp_policy=root_policy)


def local_parameter_bytes(module: nn.Module) -> int:
    """Bytes of the parameters this process holds (its shards under FSDP2)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for parameter in module.parameters():
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        total += local.numel() * local.element_size()
    return total


@contextlib.contextmanager
def fsdp_no_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient reduce-scatter for a micro-batch that is not the last of an optimizer step."""
    if not skip:
        yield
        return
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def save_sharded(objective: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Collective: every rank writes its shards of the model and the optimizer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(objective, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_sharded(objective: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Collective: the shards saved by save_sharded on the same number of processes, bit for bit."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not directory.is_dir():
        raise CheckpointError(f"{directory} not found: the checkpoint has no sharded training state")
    model_state, optim_state = get_state_dict(objective, optimizer)
    saved = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    missing = [name for name in model_state if f"model.{name}" not in saved]
    if missing:
        raise CheckpointError(f"{directory} does not fit this run's model: missing {missing[:5]} ({len(missing)})")
    state = {"model": model_state, "optim": optim_state}
    # get_state_dict gives every parameter optimizer state; parameters that never had a gradient (the last expert
    # layer's unused MLP) have none in the checkpoint: their zero state is never used.
    dcp.load(state, checkpoint_id=str(directory), planner=dcp.DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(objective, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_model_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the whole fp32 model state dict on rank 0 (CPU), empty elsewhere."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    state = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    prefix = "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def materialize_from_rank0(objective: nn.Module, full_state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Collective, after sharding: allocate every rank's shards on `device` and fill them with rank 0's whole
    state (others pass {}); rank 0's buffers too (non-persistent ones, such as RoPE tables, are in no state
    dict, and to_empty leaves them uninitialised)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )

    buffers = {name: buffer.detach().clone() for name, buffer in objective.named_buffers()} if full_state else {}
    objective.to_empty(device=device)
    set_model_state_dict(objective, full_state,
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for name, buffer in objective.named_buffers():
        if buffers:
            buffer.copy_(buffers[name])
        dist.broadcast(buffer, src=0)


# ---- LoRA (strategy lora) ----

def apply_lora(model: DeepVisionVLA, rank: int, alpha: float, dropout: float, targets: tuple[str, ...],
               freeze_vision_tower: bool, freeze_expert_shallow: bool) -> Any:
    """Inject peft LoRA adapters; base weights frozen, adapters and the new modules (aligners, proprio, action
    head) trained in full. Returns peft's LoraModel (its .model is `model`, changed in place)."""
    from peft import LoraConfig, LoraModel

    regex = check_lora_targets(model, model.config, targets, freeze_vision_tower, freeze_expert_shallow)
    lora_config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex, bias="none")
    lora_model = LoraModel(model, lora_config, "default")  # freezes everything but the adapters
    for module in new_modules(model):
        module.requires_grad_(True)
    return lora_model


def new_modules(model: DeepVisionVLA) -> list[nn.Module]:
    return [m for m in (model.pairs, model.proprio, model.action_head) if m is not None]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor of `module` (adapters + new modules under LoRA), by name."""
    return {name: p.detach().contiguous().cpu() for name, p in module.named_parameters() if p.requires_grad}


def merged_state(model: DeepVisionVLA) -> dict[str, torch.Tensor]:
    """The plain DeepVisionVLA state dict with each adapter merged into its base weight (W + B A * scale),
    without changing the training model."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                deltas[f"{name}.weight"] = deltas.get(f"{name}.weight", 0) + module.get_delta_weight(adapter)
    state = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        value = value.detach()
        if plain in deltas:
            value = (value + deltas[plain].to(value.dtype)).to(value.dtype)
        state[plain] = value.contiguous().cpu()
    return state
