"""The training loop: masked L1 (+ optional ROCKET), AdamW groups, warm-up + cosine, clipping, bf16 on CUDA,
checkpoints that policy_node loads, and an exact resume.

Exactness: the data order is a function of (seed, micro-batch number) (sampler.py), the DataLoader has its own
generator so creating it draws nothing from the global RNG, the model is built the same way on resume (so the
frozen ROCKET teacher is the same) and then overwritten with the checkpoint's weights, optimizer, scheduler
and every RNG state. A resumed run therefore computes what the uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from vla_ros import fileio
from vla_ros.errors import CheckpointError, ConfigError, ObservationError
from vla_ros.model.checkpoint import NORM_STATS_FILE, WEIGHTS_FILE, save_checkpoint
from vla_ros.model.normalization import NormStats
from vla_ros.model.processing import DeepVisionProcessor, ModelInputs
from vla_ros.training import model_setup, plan, rocket, run_state
from vla_ros.training import strategy as strategies
from vla_ros.training.config import RESUMABLE_CHANGES, TRAIN_CONFIG_FILE, TrainConfig
from vla_ros.training.data import ChunkDataset, SkippedEpisode, collate, read_interface
from vla_ros.training.distributed import DistContext
from vla_ros.training.losses import TrainingObjective
from vla_ros.training.optim import build_optimizer, build_scheduler
from vla_ros.training.sampler import ResumableBatchSampler
from vla_ros.training.train_log import TrainLog

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    final_checkpoint: Path  # loads with DeepVisionPolicy.from_checkpoint / policy_node checkpoint_dir
    steps: int  # optimizer steps done (config.steps unless stopped early)
    entries: list[dict[str, Any]]  # train_log.json entries
    skipped_episodes: list[SkippedEpisode]


def train(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Run (or, with resume = "latest" or a checkpoint directory, continue) a training run."""
    trainer = Trainer(config, resume)
    try:
        return trainer.run()
    finally:
        trainer.close()


def _fingerprint(dataset: ChunkDataset) -> str:
    episodes = [(e.dataset, e.episode_index, e.length) for e in dataset.episodes]
    return hashlib.sha256(json.dumps(episodes).encode()).hexdigest()[:16]


class Trainer:
    def __init__(self, config: TrainConfig, resume: str | Path | None = None) -> None:
        config.require_runnable()
        self.config = config
        self.dist = DistContext.from_env(config.device, single_process_group=config.strategy == "full")
        self.device = self.dist.device
        self.run_dir = Path(config.output).expanduser()
        self.precision = config.precision if config.precision != "auto" else (
            "bf16-mixed" if self.device.type == "cuda" else "fp32")
        checkpoint = self._checkpoint_to_resume(resume)
        trainer_state = run_state.read_trainer_state(checkpoint) if checkpoint else None
        # The memory plan (and the strategy's checks: LoRA targets, ...) from the metadata, before reading data.
        self.plan = self._memory_plan()

        self.dataset = ChunkDataset(config.datasets, model_setup.chunk_size(config), camera_names=config.camera_names,
                                    image_size_px=(config.image_height_px, config.image_width_px)
                                    if config.image_height_px else None,
                                    action_stride_frames=config.action_stride_frames,
                                    action_space=config.action_space, frame_cache_mb=config.frame_cache_mb,
                                    task_filter=config.task_filter, source_filter=config.source_filter,
                                    intervention_weight=config.intervention_weight,
                                    success_only=config.success_only)
        model_cfg = model_setup.model_config(config, self.dataset.interface)
        self.fingerprint = _fingerprint(self.dataset)
        if trainer_state is not None:  # before building the model: refuse early
            self._check_same_run(trainer_state)

        torch.manual_seed(config.seed)  # model init (and the ROCKET projector) are the seed's
        sharded = config.strategy == "full"
        # FSDP: only rank 0 holds whole weights (backbones in bf16 unless fp32 is asked for); the others build the
        # module tree on the meta device and receive their shards from rank 0.
        base_dtype = torch.float32 if self.precision == "fp32" or not sharded else torch.bfloat16
        model, self.tokenizer = model_setup.initial_model(config, model_cfg, base_dtype,
                                                          meta=sharded and not self.dist.is_main)
        frozen = strategies.freeze_parts(model, config.freeze_vision_tower, config.freeze_expert_shallow)
        if frozen:
            log.info("frozen parts: %d parameters", frozen)
        self.lora = None
        if config.strategy == "lora":
            self.lora = strategies.apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout,
                                              config.lora_targets, config.freeze_vision_tower,
                                              config.freeze_expert_shallow)
        if self.plan.activation_checkpointing:
            model.layer_call = strategies.checkpointed_call
        alignment = self._rocket(model) if config.rocket else None
        self.norm_stats = (NormStats.load(checkpoint / NORM_STATS_FILE) if checkpoint
                           else self.dataset.norm_stats(config.norm_mode))
        self.processor = DeepVisionProcessor(model.config, self.tokenizer, self.norm_stats)
        self._check_tasks()
        keep_ratio = config.keep_ratio or None
        self.objective = TrainingObjective(model, alignment, config.rocket_weight, keep_ratio)
        if checkpoint and not sharded:
            self._load_weights(checkpoint)
        if self.precision == "bf16":
            self.objective.to(torch.bfloat16)
        elif self.precision == "bf16-mixed" and config.strategy == "lora":  # frozen base weights in bf16
            for parameter in self.objective.parameters():
                if not parameter.requires_grad:
                    parameter.data = parameter.data.to(torch.bfloat16)
        if sharded:
            self._shard()
        else:
            self.objective.to(self.device)
        self.objective.train()
        self.optimizer = build_optimizer(self.objective, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.parameter_bytes_local = strategies.local_parameter_bytes(self.objective)
        log.info("rank %d holds %.3f GiB of parameters (strategy %s)", self.dist.rank,
                 self.parameter_bytes_local / 2**30, config.strategy)
        self.wrapped: torch.nn.Module = self.objective
        if self.dist.enabled and not sharded:  # the last expert layer's MLP is never used (its output is not read)
            self.wrapped = DistributedDataParallel(self.objective, device_ids=[self.device.index]
                                                   if self.device.type == "cuda" else None,
                                                   find_unused_parameters=True)

        self.step = 0
        self.micro_batches = 0
        self.episodes_per_block = self._episodes_per_block()
        if trainer_state is not None:
            self.step = int(trainer_state["step"])
            self.micro_batches = int(trainer_state["micro_batches"])
            self.episodes_per_block = int(trainer_state["episodes_per_block"])
            state_dir = checkpoint / run_state.STATE_DIR
            if sharded:
                strategies.load_sharded(self.objective, self.optimizer, state_dir / strategies.SHARDED_DIR)
            else:
                self.optimizer.load_state_dict(run_state.load_torch(state_dir / run_state.OPTIMIZER_FILE))
            self.scheduler.load_state_dict(run_state.load_torch(state_dir / run_state.SCHEDULER_FILE))
        self.log = TrainLog.resume(self.run_dir, self.step) if checkpoint else TrainLog(self.run_dir)
        self.sampler = ResumableBatchSampler(self.dataset.episode_lengths, config.batch_size, config.seed,
                                             episodes_per_block=self.episodes_per_block, rank=self.dist.rank,
                                             world_size=self.dist.world_size, start_batch=self.micro_batches)
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate,
                                 num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=config.num_workers > 0,
                                 generator=torch.Generator().manual_seed(config.seed))
        self._batches: Iterator[dict[str, Any]] = iter(self.loader)
        if checkpoint:  # last: nothing after this may draw random numbers before the first step
            rngs = run_state.load_torch(checkpoint / run_state.STATE_DIR / run_state.RNG_FILE)
            run_state.set_rng_state(rngs[self.dist.rank])
            log.info("resumed %s at step %d of %d", checkpoint, self.step, config.steps)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fileio.write_json_atomic(self.run_dir / TRAIN_CONFIG_FILE, config.to_dict())
        self.final_checkpoint = checkpoint

    # ---- setup helpers ----

    def _checkpoint_to_resume(self, resume: str | Path | None) -> Path | None:
        saved_path = self.run_dir / TRAIN_CONFIG_FILE
        if resume is None:
            if run_state.completed_checkpoints(self.run_dir):
                raise ConfigError(f"output={str(self.run_dir)!r} already holds checkpoints: resume it (--resume) "
                                  "or give a new --output")
            return None
        if not saved_path.is_file():
            raise ConfigError(f"cannot resume: {saved_path} is missing (was {self.run_dir} a training run?)")
        changed = {k: v for k, v in TrainConfig.load_json(saved_path).differences(self.config).items()
                   if k not in RESUMABLE_CHANGES}
        if changed:
            detail = "; ".join(f"{k}: run {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"cannot resume {self.run_dir} with different settings (it would not continue the "
                              f"same run): {detail}")
        checkpoint = (run_state.latest_checkpoint(self.run_dir) if str(resume) == "latest"
                      else Path(resume).expanduser())
        if checkpoint is None or not checkpoint.is_dir():
            raise CheckpointError(f"nothing to resume: no checkpoint in {self.run_dir / run_state.CHECKPOINTS_DIR}"
                                  if checkpoint is None else f"resume checkpoint {checkpoint} is not a directory")
        return checkpoint

    def _memory_plan(self) -> plan.MemoryPlan:
        """The run's memory plan on this process's GPU; ConfigError with the numbers when it will not fit."""
        cfg = self.config
        interface = read_interface(cfg.datasets, cfg.camera_names, (cfg.image_height_px, cfg.image_width_px)
                                   if cfg.image_height_px else None)
        model_cfg = model_setup.model_config(cfg, interface)
        limit = cfg.gpu_memory_gib or None
        if limit is None and self.device.type == "cuda":
            limit = torch.cuda.get_device_properties(self.device).total_memory / plan.GIB
        memory_plan = plan.plan_memory(model_cfg, cfg, self.dist.world_size, cfg.model_source, limit,
                                       cuda=self.device.type == "cuda")
        if self.dist.is_main:
            log.info("%s", memory_plan.table())
        plan.refuse_if_too_big(memory_plan)
        return memory_plan

    def _shard(self) -> None:
        """FSDP2 over every process: units sharded, rank 0's weights broadcast into every rank's shards."""
        from torch.distributed.device_mesh import init_device_mesh

        full_state = dict(self.objective.state_dict()) if self.dist.is_main else {}
        mesh = init_device_mesh(self.device.type, (self.dist.world_size,))
        strategies.shard_full(self.objective, self.objective.model, mesh, bf16=self.precision == "bf16-mixed")
        strategies.materialize_from_rank0(self.objective, full_state, self.device)

    def _rocket(self, model: torch.nn.Module) -> rocket.RocketAlignment:
        cfg = self.config
        if cfg.rocket_teacher_dir:
            teacher, teacher_cfg = rocket.load_teacher(cfg.rocket_teacher_dir, model.config, torch.float32)
        else:
            teacher, teacher_cfg = rocket.expert_teacher(model)
        return rocket.RocketAlignment(model.config, teacher, teacher_cfg, vla_layers=cfg.rocket_vla_layers,
                                      teacher_layers=cfg.rocket_teacher_layers, num_pairs=cfg.rocket_num_pairs,
                                      min_width=cfg.rocket_min_width, hidden_dim=cfg.rocket_hidden_dim,
                                      use_norm=cfg.rocket_vlm_norm)

    def _check_tasks(self) -> None:
        """Fail before training if an instruction cannot be encoded (empty, longer than the largest bucket)."""
        for task in self.dataset.tasks:
            try:
                self.processor.encode_text([task])
            except ObservationError as err:
                raise ConfigError(f"dataset task {task!r} cannot be a model instruction: {err}") from err

    def _load_weights(self, checkpoint: Path) -> None:
        if self.lora is not None:  # frozen base weights are rebuilt as at step 0; the trained tensors are loaded
            path = checkpoint / strategies.ADAPTER_DIR / strategies.ADAPTER_WEIGHTS
            try:
                state = load_file(path)
            except Exception as err:
                raise CheckpointError(f"{path} is not readable: {err}") from err
            expected = set(strategies.trainable_state(self.objective))
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            if missing or unexpected:
                raise CheckpointError(f"{path} does not fit this run's adapters: missing {missing[:5]}, "
                                      f"unexpected {unexpected[:5]}")
            self.objective.load_state_dict(state, strict=False)
            return
        try:
            state = load_file(checkpoint / WEIGHTS_FILE)
        except Exception as err:
            raise CheckpointError(f"{checkpoint / WEIGHTS_FILE} is not readable: {err}") from err
        try:
            self.objective.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{checkpoint / WEIGHTS_FILE} does not fit this run's model: {err}") from err
        if self.objective.rocket is not None:
            projector = run_state.load_torch(checkpoint / run_state.STATE_DIR / run_state.ROCKET_FILE)
            self.objective.rocket.projector.load_state_dict(projector)

    def _episodes_per_block(self) -> int:
        if self.config.episodes_per_block:
            return self.config.episodes_per_block
        mean_bytes = float(np.mean([self.dataset.episode_frame_bytes(e) for e in self.dataset.episodes]))
        fit = int((self.config.frame_cache_mb << 20) // max(1.0, mean_bytes))
        return max(1, min(len(self.dataset.episodes), fit))

    def _check_same_run(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"the checkpoint was written by {state['world_size']} process(es), this run has "
                              f"{self.dist.world_size}: the data order would differ; resume with the same count")
        if state["dataset_fingerprint"] != self.fingerprint:
            raise ConfigError("the datasets changed since the checkpoint (episodes added, removed or skipped): "
                              "resuming would not continue the same run")

    # ---- loop ----

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16-mixed" and self.config.strategy != "full":  # FSDP2 casts by its own policy
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prepare(self, batch: dict[str, Any]) -> tuple[ModelInputs, torch.Tensor, torch.Tensor]:
        """The same preprocessing as inference (DeepVisionProcessor), on the training device."""
        frames = batch["frames"].to(self.device, non_blocking=True)  # (B, C, H_img, W_img, 3) uint8
        inputs = self.processor(frames, batch["instruction"], batch["state"].to(self.device))
        target = self.norm_stats.normalize_actions(batch["actions"].to(self.device))  # (B, H, A) normalised
        # Per-sample loss weights (intervention_weight) ride on the step mask: masked_l1 takes the weighted mean.
        mask = batch["action_mask"].to(self.device).float() * batch["weight"].to(self.device)[:, None]
        return inputs, target, mask

    def _train_step(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        accum = self.config.grad_accum_steps
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = next(self._batches)
            self.micro_batches += 1
            skip_sync = self.dist.enabled and micro < accum - 1  # reduce gradients once per optimizer step
            if self.config.strategy == "full":
                no_sync = strategies.fsdp_no_sync(self.objective, skip_sync)
            else:
                no_sync = self.wrapped.no_sync() if skip_sync else contextlib.nullcontext()
            with no_sync:
                inputs, target, mask = self._prepare(batch)
                with self._autocast():
                    losses = self.wrapped(inputs, target, mask)
                (losses["loss"] / accum).backward()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / accum
        max_norm = self.config.grad_clip_norm if self.config.grad_clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums, grad_norm

    def run(self, until_step: int | None = None) -> TrainResult:
        """Train to config.steps, or stop after `until_step` (with a checkpoint there, to be resumed later)."""
        cfg = self.config
        stop = cfg.steps if until_step is None else min(until_step, cfg.steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.dist.is_main and cfg.progress))
        window: dict[str, list[torch.Tensor]] = {}
        grad_norm = torch.zeros(())
        started_s = last_s = time.perf_counter()
        last_step = self.step
        with bar:
            while self.step < stop:
                losses, grad_norm = self._train_step()
                self.step += 1
                for key, value in losses.items():
                    window.setdefault(key, []).append(value)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now_s = time.perf_counter()
                    entry = self._log_entry(window, grad_norm, (self.step - last_step) / max(1e-9, now_s - last_s),
                                            now_s - started_s)
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{max(entry['lr'].values()):.2e}")
                    window, last_s, last_step = {}, now_s, self.step
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self._save()
        if self.final_checkpoint is None or run_state.step_name(self.step) != self.final_checkpoint.name:
            self._save()  # stopped between checkpoints: keep the work done
        if self.dist.is_main:
            log.info("trained to step %d of %d; checkpoint %s, loss curve %s", self.step, cfg.steps,
                     self.final_checkpoint, self.log.plot_path)
        return TrainResult(self.run_dir, self.final_checkpoint, self.step, self.log.entries, self.dataset.skipped)

    def _log_entry(self, window: dict[str, list[torch.Tensor]], grad_norm: torch.Tensor, steps_per_s: float,
                   elapsed_s: float) -> dict[str, Any]:
        means = self.dist.mean(torch.stack([torch.stack(window[k]).mean() for k in sorted(window)]))
        epoch = self.micro_batches / self.sampler.batches_per_epoch
        entry = {"step": self.step, **{k: float(v) for k, v in zip(sorted(window), means.tolist())},
                 "grad_norm": float(grad_norm), "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups},
                 "epoch": round(epoch, 4),
                 "samples_per_s": steps_per_s * self.config.batch_size * self.config.grad_accum_steps
                 * self.dist.world_size, "elapsed_s": elapsed_s}
        self.log.append(entry)
        if self.dist.is_main:
            self.log.save()
        return entry

    def _save(self) -> None:
        rngs = self.dist.gather(run_state.rng_state())
        shards, full_state = None, None
        if self.config.strategy == "full":  # collective: every rank writes its shards, rank 0 gets whole weights
            shards = self.run_dir / run_state.CHECKPOINTS_DIR / f".{run_state.step_name(self.step)}.shards"
            if self.dist.is_main:
                shutil.rmtree(shards, ignore_errors=True)
                shards.mkdir(parents=True)
            self.dist.barrier()
            strategies.save_sharded(self.objective, self.optimizer, shards)
            full_state = strategies.full_model_state(self.objective)
            self.dist.barrier()
        if self.dist.is_main:
            path = run_state.write_checkpoint(self.run_dir, self.step,
                                              lambda tmp: self._fill(tmp, rngs, shards, full_state),
                                              self.config.keep_last_checkpoints)
            log.info("step %d: checkpoint %s", self.step, path)
            self.log.save()
            self.log.plot()
        self.final_checkpoint = self.run_dir / run_state.CHECKPOINTS_DIR / run_state.step_name(self.step)
        self.dist.barrier()

    def _fill(self, directory: Path, rngs: list[dict[str, Any]], shards: Path | None,
              full_state: dict[str, torch.Tensor] | None) -> None:
        """A policy checkpoint (whole, consolidated or LoRA-merged weights) plus what resuming needs."""
        model = self.objective.model
        if self.lora is not None:
            save_checkpoint(model, self.norm_stats, self.tokenizer, directory, strategies.merged_state(model))
            self._save_adapter(directory / strategies.ADAPTER_DIR)
        else:
            save_checkpoint(model, self.norm_stats, self.tokenizer, directory, full_state)
        self.config.save_json(directory / TRAIN_CONFIG_FILE)
        state = directory / run_state.STATE_DIR
        state.mkdir()
        if shards is not None:  # model, optimizer and ROCKET projector shards
            os.replace(shards, state / strategies.SHARDED_DIR)
        else:
            torch.save(self.optimizer.state_dict(), state / run_state.OPTIMIZER_FILE)
        torch.save(self.scheduler.state_dict(), state / run_state.SCHEDULER_FILE)
        torch.save(rngs, state / run_state.RNG_FILE)
        if self.objective.rocket is not None and shards is None:
            torch.save(self.objective.rocket.projector.state_dict(), state / run_state.ROCKET_FILE)
        epoch, within = self.sampler.position(self.micro_batches)
        fileio.write_json_atomic(state / run_state.TRAINER_STATE_FILE, {
            "step": self.step, "micro_batches": self.micro_batches, "epoch": epoch, "micro_batch_in_epoch": within,
            "episodes_per_block": self.episodes_per_block, "world_size": self.dist.world_size,
            "seed": self.config.seed, "dataset_fingerprint": self.fingerprint,
            "precision": self.precision, "skipped_episodes": [dataclasses.asdict(s) for s in self.dataset.skipped]})

    def _save_adapter(self, directory: Path) -> None:
        """LoRA adapters and every fully trained module (peft's adapter_config.json beside them)."""
        directory.mkdir()
        save_file(strategies.trainable_state(self.objective), directory / strategies.ADAPTER_WEIGHTS,
                  metadata={"format": "pt"})
        self.lora.peft_config["default"].save_pretrained(str(directory))

    def close(self) -> None:
        self._batches = iter(())  # stops DataLoader workers
        self.dist.close()
