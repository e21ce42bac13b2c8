"""TrainConfig: every setting of a training run, one frozen flat tree saved beside the run (train_config.json).

Each field is a CLI flag of `python -m vla_ros.training.train` (`--batch-size` for `batch_size`; `--dataset`
may repeat). Empty strings, empty tuples and zeros mean "derive it" where the description says so (the
dataset's metadata or the model config), so the robot interface always comes from what was recorded.
Learning-rate defaults follow deepvision_vla.md §5.6 (StarVLA QwenOFT + Qwen3-VL-4B) [I].
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from vla_ros.config.schema import flatten, from_flat, iter_fields, param
from vla_ros.errors import ConfigError
from vla_ros.model.configuration import HEAD_NAMES
from vla_ros.model.normalization import NORM_MODES
from vla_ros.training.strategy import AC_MODES, STRATEGIES
from vla_ros.types import ACTION_SPACES

MODEL_PRESETS = ("tiny", "paper")
PRECISIONS = ("auto", "fp32", "bf16-mixed", "bf16")
DEVICES = ("auto", "cpu", "cuda")
TRAIN_CONFIG_FILE = "train_config.json"
# Fields that may differ when a run is resumed: they change neither the data order nor the arithmetic.
RESUMABLE_CHANGES = ("save_every", "keep_last_checkpoints", "log_every", "num_workers", "frame_cache_mb",
                     "progress", "gpu_memory_gib")


def _fail(field: str, value: Any, rule: str) -> None:
    raise ConfigError(f"TrainConfig.{field}={value!r}: {rule}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # ---- data ----
    datasets: tuple[str, ...] = param((), "LeRobot v3 dataset directories (vla_ros recorder output or any "
                                      "LeRobot v3 dataset); every one must share joints, actions and fps")
    task_filter: tuple[str, ...] = param((), "Train only on episodes whose task instruction contains one of "
                                         "these strings (e.g. pour); empty: every episode")
    success_only: bool = param(False, "Train only on episodes recorded as successful (is_success): leaves out "
                               "the failed demonstrations a scripted expert or a tired operator recorded")
    source_filter: tuple[str, ...] = param((), "Train only on frames whose recorded source is one of these "
                                           "(teleop, policy, scripted, intervention), and supervise only chunk "
                                           "steps of those sources; empty: every frame")
    intervention_weight: float = param(1.0, "Loss weight of samples taken at intervention frames (a person "
                                       "or the DAgger expert correcting the policy; HG-DAgger up-weights "
                                       "them); 1: like any frame", range=(0.001, 1000.0))
    camera_names: tuple[str, ...] = param((), "Cameras to train on, in the policy's order (keys without "
                                          "'observation.images.'); empty: every camera of the first dataset")
    image_height_px: int = param(0, "Frame height the policy is given [px]; 0: the first camera's recorded "
                                 "height. Other sizes are resized like policy_node does (cv2 INTER_AREA)",
                                 range=(0, 8192))
    image_width_px: int = param(0, "Frame width the policy is given [px]; 0: the first camera's width",
                                range=(0, 8192))
    chunk_size: int = param(0, "H actions per chunk; 0: the model config's robot.chunk_size", range=(0, 1024))
    action_stride_frames: int = param(1, "Frames between consecutive chunk actions; chunk dt_s = stride / fps",
                                      range=(1, 1000))
    action_space: str = param("joint_position", "joint_position: the recorded commands as targets; "
                              "joint_delta: command minus the state at the chunk's first frame",
                              choices=ACTION_SPACES)
    use_proprio: bool = param(False, "Give the model the normalised joint state as one extra token")
    norm_mode: str = param("quantile", "Action/state normalisation: quantile maps q01..q99 to [-1, 1]",
                           choices=NORM_MODES)
    frame_cache_mb: int = param(2048, "Decoded video frames kept per data process (LRU over episodes) [MiB]",
                                range=(1, 1 << 22))
    episodes_per_block: int = param(0, "Shuffle within blocks of this many episodes, so each block's videos "
                                    "are decoded once; 0: as many as fit in frame_cache_mb", range=(0, 1 << 30))
    num_workers: int = param(0, "DataLoader worker processes (each has its own frame cache)", range=(0, 64))

    # ---- model ----
    model: str = param("", "tiny | paper | path to a DeepVisionConfig JSON; empty with --init-checkpoint")
    init_checkpoint: str = param("", "Start from this vla_ros checkpoint (architecture, weights, tokenizer); "
                                 "the robot interface still comes from the dataset")
    vlm_dir: str = param("", "Local Hugging Face Qwen3-VL directory (paper/JSON models): pretrained VLM")
    expert_dir: str = param("", "Local Hugging Face DINOv3 directory (paper/JSON models): pretrained expert")
    baseline: bool = param(False, "QwenVLA-OFT baseline: no vision expert (tiny/paper presets only)")
    keep_ratio: float = param(0.0, "AGVP keep ratio while training; 0: the model config's", range=(0.0, 1.0))
    head: str = param("", "Action head: oft_mlp | vla_adapter | vlm4vla (model.heads); empty: the model "
                      "config's. A head that differs from --init-checkpoint's starts from random init",
                      choices=("",) + HEAD_NAMES)
    num_query_tokens: int = param(0, "Query tokens of the vla_adapter / vlm4vla head; 0: the head's default",
                                  range=(0, 4096))

    # ---- optimisation ----
    steps: int = param(1000, "Optimizer steps", range=(1, 1 << 40))
    batch_size: int = param(8, "Samples per process per micro-batch", range=(1, 1 << 20))
    grad_accum_steps: int = param(1, "Micro-batches per optimizer step", range=(1, 1 << 20))
    lr_vlm: float = param(1e-5, "Peak learning rate of Qwen3-VL (vision tower + LLM); 0 freezes it",
                          range=(0.0, 1.0))
    lr_expert: float = param(2.5e-5, "Peak learning rate of the DINOv3 expert; 0 freezes it", range=(0.0, 1.0))
    lr_new: float = param(1e-4, "Peak learning rate of new modules (aligners, proprio, ROCKET projector)",
                          range=(0.0, 1.0))
    lr_head: float = param(1e-4, "Peak learning rate of the action head", range=(0.0, 1.0))
    min_lr: float = param(1e-6, "Cosine floor (a group whose peak is lower stays at its peak)",
                          range=(0.0, 1.0))
    warmup_steps: int = param(-1, "Linear warm-up steps from 0; -1: 3 % of steps", range=(-1, 1 << 40))
    weight_decay: float = param(0.0, "AdamW weight decay on matrices (never on norms and biases)",
                                range=(0.0, 10.0))
    adam_beta1: float = param(0.9, "AdamW beta1", range=(0.0, 0.99999))
    adam_beta2: float = param(0.95, "AdamW beta2", range=(0.0, 0.99999999))
    adam_eps: float = param(1e-8, "AdamW epsilon", range=(1e-12, 1.0))
    grad_clip_norm: float = param(1.0, "Clip the global gradient norm to this; 0: no clipping",
                                  range=(0.0, 1e6))
    precision: str = param("auto", "auto: bf16-mixed on CUDA, fp32 on CPU; bf16-mixed: fp32 weights with bf16 "
                           "autocast; bf16: bf16 weights and optimizer state (half the memory, less exact)",
                           choices=PRECISIONS)
    device: str = param("auto", "auto: cuda (this process's local rank) when available, else cpu",
                        choices=DEVICES)

    # ---- strategy: how the model is held and trained (vla_ros/training/strategy.py) ----
    strategy: str = param("ddp", "ddp: a whole fp32 copy per process (DDP over torchrun's processes); full: FSDP2 "
                          "shards of parameters, gradients and optimizer state across torchrun's processes "
                          "(sharded checkpoints); lora: peft LoRA adapters on frozen base weights, new modules "
                          "fully trained", choices=STRATEGIES)
    activation_checkpointing: str = param("auto", "Recompute each transformer layer's activations in backward "
                                          "instead of keeping them; auto: on from 0.5 B parameters (paper size)",
                                          choices=AC_MODES)
    freeze_vision_tower: bool = param(False, "Freeze the Qwen3-VL vision tower (no gradients, no adapters)")
    freeze_expert_shallow: bool = param(False, "Freeze the DINOv3 expert's uncoupled (shallow) layers and "
                                        "embeddings (no gradients, no adapters)")
    lora_rank: int = param(16, "LoRA rank r", range=(1, 4096))
    lora_alpha: float = param(32.0, "LoRA alpha (adapter scale alpha / r)", range=(1e-6, 1e6))
    lora_dropout: float = param(0.0, "Dropout on the LoRA branch input", range=(0.0, 0.99))
    lora_targets: tuple[str, ...] = param(("llm", "expert_coupled"), "LoRA targets: parts (llm: the LLM's "
                                          "attention and MLP projections; expert_coupled / expert_shallow: the "
                                          "expert's coupled / uncoupled layers; vision_tower) or regexes over "
                                          "DeepVisionVLA module names")
    lr_lora: float = param(1e-4, "Peak learning rate of the LoRA adapters", range=(0.0, 1.0))
    gpu_memory_gib: float = param(0.0, "Per-GPU memory the run must fit in (the memory plan refuses a run that "
                                  "does not) [GiB]; 0: the CUDA device's total memory, no check on CPU",
                                  range=(0.0, 1e6))

    # ---- ROCKET auxiliary alignment (deepvision_vla.md §4), off by default ----
    rocket: bool = param(False, "Add ROCKET's multi-layer alignment of VLA visual tokens to a frozen DINOv3")
    rocket_weight: float = param(0.5, "Weight of the alignment loss (ROCKET: 0.5 on LIBERO)", range=(0.0, 100.0))
    rocket_teacher_dir: str = param("", "Teacher: local HF DINOv3 directory; empty: a frozen copy of the "
                                    "model's own expert as initialised")
    rocket_vla_layers: tuple[int, ...] = param((), "VLA hidden-state indices (0 = embeddings, i = after LLM "
                                               "layer i-1, -1 = after the last); empty: balanced choice")
    rocket_teacher_layers: tuple[int, ...] = param((), "Teacher hidden-state indices paired with "
                                                   "rocket_vla_layers; empty: balanced choice")
    rocket_num_pairs: int = param(4, "Layer pairs of the balanced choice (deepest pair = last layers)",
                                  range=(1, 256))
    rocket_min_width: float = param(0.2, "Matryoshka width of the shallowest pair, rising linearly to 1.0",
                                    range=(0.01, 1.0))
    rocket_hidden_dim: int = param(0, "Projector hidden width; 0: twice the teacher width", range=(0, 1 << 20))
    rocket_vlm_norm: bool = param(True, "LayerNorm on the VLA hidden states before the projector")

    # ---- run ----
    output: str = param("", "Run directory: train_config.json, checkpoints/, train_log.json, loss_curve.png")
    seed: int = param(0, "Seeds model init, data order and every RNG", range=(0, 2**63 - 1))
    save_every: int = param(500, "Write a checkpoint every N steps (and always after the last)",
                            range=(1, 1 << 40))
    keep_last_checkpoints: int = param(2, "Older step checkpoints are deleted; 0 keeps all", range=(0, 1 << 20))
    log_every: int = param(10, "Steps between entries of train_log.json", range=(1, 1 << 40))
    progress: bool = param(True, "Show a tqdm progress bar (rank 0)")

    def __post_init__(self) -> None:
        for spec in iter_fields(type(self)):  # ranges and choices also bind the Python API, not only the CLI
            value, meta = getattr(self, spec.name), spec.meta
            if meta.range is not None and not meta.range[0] <= value <= meta.range[1]:
                _fail(spec.name, value, f"must be in [{meta.range[0]}, {meta.range[1]}]")
            if meta.choices is not None and value not in meta.choices:
                _fail(spec.name, value, f"must be one of {meta.choices}")
        if any(not d for d in self.datasets):
            _fail("datasets", self.datasets, "must not contain empty paths")
        if (self.image_height_px == 0) != (self.image_width_px == 0):
            _fail("image_height_px", (self.image_height_px, self.image_width_px),
                  "give both image_height_px and image_width_px, or neither")
        if self.model and self.init_checkpoint:
            _fail("model", self.model, "give --model or --init-checkpoint, not both (a checkpoint brings its "
                  "architecture)")
        if self.init_checkpoint and (self.vlm_dir or self.expert_dir):
            _fail("init_checkpoint", self.init_checkpoint, "already holds weights: drop --vlm-dir/--expert-dir")
        if self.baseline and self.model not in MODEL_PRESETS:
            _fail("baseline", self.baseline, f"only with --model {' or '.join(MODEL_PRESETS)}")
        if self.baseline and self.expert_dir:
            _fail("expert_dir", self.expert_dir, "the baseline has no expert")
        if len(self.rocket_vla_layers) != len(self.rocket_teacher_layers):
            _fail("rocket_teacher_layers", self.rocket_teacher_layers,
                  f"must pair one to one with rocket_vla_layers {self.rocket_vla_layers}")
        if self.rocket and self.baseline:
            _fail("rocket", self.rocket, "needs the expert branch's pixels: not available for the baseline")
        if self.strategy == "lora" and self.precision == "bf16":
            _fail("precision", self.precision, "strategy lora keeps adapters in fp32: use bf16-mixed (the frozen "
                  "base weights are then held in bf16)")
        if self.strategy == "lora" and not self.lora_targets:
            _fail("lora_targets", self.lora_targets, "name at least one part or module-name regex")
        if self.rocket and self.rocket_weight <= 0:
            _fail("rocket_weight", self.rocket_weight, "must be > 0 when rocket is on")

    @property
    def model_source(self) -> str:
        return self.model or self.init_checkpoint

    def resolved_warmup_steps(self) -> int:
        return round(0.03 * self.steps) if self.warmup_steps < 0 else min(self.warmup_steps, self.steps)

    def require_runnable(self) -> None:
        """The checks that only a run (not a partial config) needs."""
        if not self.datasets:
            _fail("datasets", self.datasets, "give at least one --dataset DIR")
        if not self.output:
            _fail("output", self.output, "give --output DIR (the run directory)")
        if not self.model_source:
            _fail("model", self.model, f"give --model {'|'.join(MODEL_PRESETS)}|<config.json> or --init-checkpoint")

    # ---- JSON ----

    def to_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in flatten(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        return from_flat(cls, data, base=base)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read a TrainConfig JSON: {err}") from err
        return cls.from_dict(data)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """{field: (self value, other value)} for every field that differs."""
        mine, theirs = flatten(self), flatten(other)
        return {name: (mine[name], theirs[name]) for name in mine if mine[name] != theirs[name]}
