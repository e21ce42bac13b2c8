"""Memory plan of a training run: per-GPU bytes of parameters, gradients, optimizer state, gathered FSDP units
and activations, computed on the meta device (no weights are allocated, no GPU is needed).

    python -m vla_ros.training.plan --model paper --strategy lora|full|ddp --gpus N --gpu-memory-gib M \\
        --batch-size B [--activation-checkpointing auto|on|off] [--cameras C] [--json PATH]

How each line is derived (per GPU):
- parameters, gradients, optimizer: counted from the real module tree built on the meta device with the run's
  strategy applied (frozen parts, LoRA adapters). Bytes per parameter: weights 4 (fp32 master; 2 for frozen
  base weights of `lora` under bf16-mixed; 2 everywhere with precision bf16), gradients 4 and AdamW 8 (two
  moments) per trainable parameter (2 and 4 with precision bf16). `full` divides all three by the GPU count.
- gathered units (`full` only): FSDP2 all-gathers a unit's weights in the compute dtype while it runs and
  prefetches the next one, and holds its unsharded fp32 gradients until the reduce-scatter: root parameters
  (kept gathered the whole step) + 2 x the largest unit's weights + the largest unit's fp32 gradients.
- activations: the bytes autograd saves for backward in one meta-device forward of the real model at this batch
  size (torch.autograd.graph.saved_tensors_hooks; parameters and views of them excluded, each tensor counted
  once), in the compute dtype. With activation checkpointing: everything saved outside the layers, plus each
  layer's inputs (what checkpointing keeps), plus the largest single layer's saved tensors (recomputed one at a
  time in backward). The prompt uses the largest instruction bucket.
- reserve: 10 % of the above for allocator fragmentation and transient buffers (attention workspace, the
  optimizer's foreach temporaries), plus 1 GiB for the CUDA context and kernels. An estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_ros.errors import ConfigError, VlaRosError
from vla_ros.model.checkpoint import placeholder_norm_stats
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import DeepVisionProcessor, build_byte_tokenizer
from vla_ros.training import strategy as strategies
from vla_ros.training.config import TrainConfig
from vla_ros.training.optim import group_of, peak_lrs

GIB = 1 << 30
RESERVE_FRACTION = 0.10
RUNTIME_BYTES = 1 * GIB
_ROWS = ("parameters", "gradients", "optimizer", "gathered_units", "activations", "reserve")


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    model: str
    strategy: str
    gpus: int
    batch_size: int  # per GPU
    precision: str
    activation_checkpointing: bool
    total_parameters: int
    trainable_parameters: int
    parameter_bytes_total: int  # every parameter at its held dtype, before sharding
    bytes: dict[str, int]  # per GPU, one entry per _ROWS
    activation_bytes_per_sample: int
    gpu_memory_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory_bytes is None else self.total_bytes <= self.gpu_memory_bytes

    def max_batch_size(self) -> int | None:
        """Largest per-GPU batch that fits (activations scale with the batch, the rest does not)."""
        if self.gpu_memory_bytes is None:
            return None
        fixed = self.total_bytes - self.bytes["activations"] - self.bytes["reserve"]
        per_sample = self.activation_bytes_per_sample * (1 + RESERVE_FRACTION)
        room = (self.gpu_memory_bytes - RUNTIME_BYTES) - fixed * (1 + RESERVE_FRACTION)
        return max(0, int(room // per_sample)) if per_sample > 0 else None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(total_bytes=self.total_bytes, fits=self.fits, max_batch_size=self.max_batch_size(),
                   gib={k: round(v / GIB, 3) for k, v in {**self.bytes, "total": self.total_bytes}.items()})
        return out

    def table(self) -> str:
        limit = "no limit" if self.gpu_memory_bytes is None else f"{self.gpu_memory_bytes / GIB:.1f} GiB"
        lines = [f"memory plan: model {self.model}, strategy {self.strategy}, {self.gpus} GPU(s), batch "
                 f"{self.batch_size}/GPU, {self.precision}, activation checkpointing "
                 f"{'on' if self.activation_checkpointing else 'off'}",
                 f"parameters: {self.total_parameters / 1e9:.3f} B total, {self.trainable_parameters / 1e6:.1f} M "
                 "trainable",
                 f"{'per GPU':<16}{'GiB':>10}"]
        lines += [f"{row:<16}{self.bytes[row] / GIB:>10.2f}" for row in _ROWS]
        verdict = {None: "", True: "fits", False: "DOES NOT FIT"}[self.fits]
        lines.append(f"{'total':<16}{self.total_bytes / GIB:>10.2f}   of {limit}  {verdict}")
        if self.fits is not None:
            lines.append(f"largest batch per GPU that fits: {self.max_batch_size()}")
        return "\n".join(lines)


def build_meta_model(model_cfg: DeepVisionConfig, config: TrainConfig) -> DeepVisionVLA:
    """The run's model on the meta device with its strategy applied (frozen parts, adapters)."""
    with torch.device("meta"):
        model = DeepVisionVLA(model_cfg)
        strategies.freeze_parts(model, config.freeze_vision_tower, config.freeze_expert_shallow)
        if config.strategy == "lora":
            strategies.apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout,
                                  config.lora_targets, config.freeze_vision_tower, config.freeze_expert_shallow)
    lrs = peak_lrs(config)
    for name, parameter in model.named_parameters():  # a learning rate of 0 freezes its group (optim.py)
        if lrs[group_of("model." + name)] == 0.0:
            parameter.requires_grad_(False)
    return model


class _SavedTensors:
    """Bytes autograd saves for backward, split into outside-of-layers and per layer call."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {id(p) for p in model.parameters()}
        self.seen: set[int] = set()
        self.keep: list[torch.Tensor] = []  # keeps ids unique while counting
        self.outside = 0
        self.layers: list[int] = []
        self.layer_inputs = 0
        self._current: int | None = None

    def _base(self, tensor: torch.Tensor) -> torch.Tensor:
        while tensor._base is not None:
            tensor = tensor._base
        return tensor

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = self._base(tensor)
        if id(base) in self.params or id(tensor) in self.params or id(base) in self.seen:
            return tensor
        self.seen.add(id(base))
        self.keep.append(base)
        size = base.numel() * base.element_size()
        if self._current is None:
            self.outside += size
        else:
            self.layers[self._current] += size
        return tensor

    def layer_call(self, fn: Any, *args: Any) -> Any:
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg.is_floating_point() and id(self._base(arg)) not in self.seen:
                self.layer_inputs += arg.numel() * arg.element_size()
        self.layers.append(0)
        self._current = len(self.layers) - 1
        try:
            return fn(*args)
        finally:
            self._current = None


def activation_bytes(model: DeepVisionVLA, batch_size: int, compute_dtype: torch.dtype,
                     checkpointing: bool) -> int:
    """Saved-for-backward bytes of one training forward at `batch_size`, on the meta device."""
    cfg = model.config
    processor = DeepVisionProcessor(cfg, build_byte_tokenizer(cfg.vlm.tokens), placeholder_norm_stats(cfg))
    robot = cfg.robot
    frames = torch.zeros((batch_size, len(robot.camera_names), *robot.camera_image_size_px, 3), dtype=torch.uint8,
                         device="meta")
    instruction = "x" * cfg.prompt.instruction_token_buckets[-1]  # one byte token each: the largest bucket
    inputs = processor(frames, [instruction] * batch_size, torch.zeros(batch_size, robot.state_dim, device="meta"))
    counter = _SavedTensors(model)
    model.to(compute_dtype).train()
    model.layer_call = counter.layer_call
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            model(inputs)
    finally:
        model.layer_call = None
    if not checkpointing:
        return counter.outside + sum(counter.layers)
    return counter.outside + counter.layer_inputs + max(counter.layers, default=0)


def plan_memory(model_cfg: DeepVisionConfig, config: TrainConfig, gpus: int, model_name: str = "",
                gpu_memory_gib: float | None = None, cuda: bool = True) -> MemoryPlan:
    """The plan of `config` (strategy, precision, batch_size, activation_checkpointing, freezing, LoRA) on
    `gpus` GPUs for the model `model_cfg`. cuda: whether precision auto means bf16-mixed. LoRA and ddp over
    several GPUs replicate the model: their per-GPU numbers are those of one GPU."""
    if gpus < 1:
        raise ConfigError(f"gpus={gpus}: must be >= 1")
    precision = config.precision if config.precision != "auto" else ("bf16-mixed" if cuda else "fp32")
    model = build_meta_model(model_cfg, config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = total - trainable
    half = precision == "bf16"
    compute_dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    master = 2 if half else 4
    frozen_bytes = 2 if (half or (config.strategy == "lora" and precision == "bf16-mixed")) else master
    param_bytes = trainable * master + frozen * frozen_bytes
    grad_bytes = trainable * (2 if half else 4)
    optim_bytes = trainable * (4 if half else 8)
    gathered = 0
    shards = gpus if config.strategy == "full" else 1
    if config.strategy == "full":
        compute_size = torch.finfo(compute_dtype).bits // 8
        in_units: set[int] = set()
        largest, largest_trainable = 0, 0
        for unit in strategies.fsdp_units(model):
            params = [p for m in unit for p in m.parameters()]
            in_units.update(id(p) for p in params)
            largest = max(largest, sum(p.numel() for p in params))
            largest_trainable = max(largest_trainable, sum(p.numel() for p in params if p.requires_grad))
        root = sum(p.numel() for p in model.parameters() if id(p) not in in_units)
        gathered = (root + 2 * largest) * compute_size + largest_trainable * 4
    checkpointing = strategies.activation_checkpointing_enabled(config.activation_checkpointing, total)
    activations = activation_bytes(model, config.batch_size, compute_dtype, checkpointing)
    rows = {"parameters": math.ceil(param_bytes / shards), "gradients": math.ceil(grad_bytes / shards),
            "optimizer": math.ceil(optim_bytes / shards), "gathered_units": gathered, "activations": activations}
    rows["reserve"] = int(RESERVE_FRACTION * sum(rows.values())) + RUNTIME_BYTES
    limit = None if not gpu_memory_gib else int(gpu_memory_gib * GIB)
    return MemoryPlan(model=model_name, strategy=config.strategy, gpus=gpus, batch_size=config.batch_size,
                      precision=precision, activation_checkpointing=checkpointing, total_parameters=total,
                      trainable_parameters=trainable, parameter_bytes_total=param_bytes, bytes=rows,
                      activation_bytes_per_sample=activations // config.batch_size, gpu_memory_bytes=limit)


def refuse_if_too_big(plan: MemoryPlan) -> None:
    """ConfigError with the plan's table when the run will not fit."""
    if plan.fits is False:
        raise ConfigError("this run will not fit in GPU memory (set --gpu-memory-gib to override the limit; "
                          "try --strategy lora or full, more GPUs, a smaller --batch-size with "
                          "--grad-accum-steps, or --activation-checkpointing on):\n" + plan.table())


# ---- command line ----

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vla_ros.training.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="paper", help="tiny | paper | path to a DeepVisionConfig JSON")
    parser.add_argument("--baseline", action="store_true", help="QwenVLA-OFT baseline (no expert)")
    parser.add_argument("--strategy", default="lora", choices=strategies.STRATEGIES)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs (processes) over all nodes")
    parser.add_argument("--gpu-memory-gib", type=float, default=0.0, help="Memory of one GPU [GiB]; 0: no check")
    parser.add_argument("--batch-size", type=int, default=1, help="Samples per GPU per micro-batch")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16-mixed", "bf16"),
                        help="auto: bf16-mixed (a GPU run)")
    parser.add_argument("--activation-checkpointing", default="auto", choices=strategies.AC_MODES)
    parser.add_argument("--cameras", type=int, default=1, help="Cameras per sample")
    parser.add_argument("--use-proprio", action="store_true")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-targets", nargs="*", default=None)
    parser.add_argument("--freeze-vision-tower", action="store_true")
    parser.add_argument("--freeze-expert-shallow", action="store_true")
    parser.add_argument("--json", default="memory_plan.json", help="Write the plan here ('' to skip)")
    return parser


def model_config(name: str, baseline: bool, cameras: int, use_proprio: bool) -> DeepVisionConfig:
    from vla_ros.training.model_setup import architecture
    base = architecture(TrainConfig(model=name, baseline=baseline))
    camera_names = tuple(f"camera_{i}" for i in range(cameras))
    robot = dataclasses.replace(base.robot, camera_names=camera_names, use_proprio=use_proprio)
    return dataclasses.replace(base, robot=robot)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cameras < 1:
            raise ConfigError(f"cameras={args.cameras}: must be >= 1")
        model_cfg = model_config(args.model, args.baseline, args.cameras, args.use_proprio)
        overrides = {} if args.lora_targets is None else {"lora_targets": tuple(args.lora_targets)}
        config = TrainConfig(strategy=args.strategy, batch_size=args.batch_size, precision=args.precision,
                             activation_checkpointing=args.activation_checkpointing, lora_rank=args.lora_rank,
                             freeze_vision_tower=args.freeze_vision_tower,
                             freeze_expert_shallow=args.freeze_expert_shallow, **overrides)
        plan = plan_memory(model_cfg, config, args.gpus, args.model, args.gpu_memory_gib or None)
    except VlaRosError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.table())
    if args.json:
        Path(args.json).write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if plan.fits is not False else 1


if __name__ == "__main__":
    sys.exit(main())
