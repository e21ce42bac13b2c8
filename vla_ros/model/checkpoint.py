"""Checkpoint directories: config.json, model.safetensors, norm_stats.json and the tokenizer files.

Every failure raises CheckpointError naming the path and what was expected there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vla_ros.errors import CheckpointError, ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.normalization import FeatureStats, NormStats
from vla_ros.model.processing import DeepVisionProcessor, build_byte_tokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_STATS_FILE = "norm_stats.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_CONTENTS = (f"a vla_ros checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE}, {NORM_STATS_FILE} and "
             f"{', '.join(TOKENIZER_FILES)}")


@dataclasses.dataclass
class LoadedCheckpoint:
    model: DeepVisionVLA  # eval mode, on the requested device and dtype
    processor: DeepVisionProcessor  # config, tokenizer and norm stats of the checkpoint


def save_checkpoint(model: DeepVisionVLA, norm_stats: NormStats, tokenizer: PreTrainedTokenizerBase,
                    path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a complete checkpoint directory (created if needed); returns its path.

    state_dict: the weights to write instead of model.state_dict() (a consolidated FSDP state, merged LoRA).
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    DeepVisionProcessor(model.config, tokenizer, norm_stats)  # refuse to write a checkpoint that cannot load
    model.config.save_json(root / CONFIG_FILE)
    state = {name: tensor.detach().contiguous().cpu()
             for name, tensor in (model.state_dict() if state_dict is None else state_dict).items()}
    save_file(state, root / WEIGHTS_FILE, metadata={"format": "pt"})
    norm_stats.save(root / NORM_STATS_FILE)
    tokenizer.save_pretrained(root)
    log.info("saved checkpoint %s (%d tensors)", root, len(state))
    return root


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                    ) -> LoadedCheckpoint:
    root = Path(path)
    processor = load_processor(root)
    config = processor.config
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found: expected the model weights in safetensors format")
    with torch.device(device):
        model = DeepVisionVLA(config)
    try:
        state = load_file(weights, device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{weights} does not match {root / CONFIG_FILE}: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{weights} does not match {root / CONFIG_FILE}: missing {result.missing_keys[:5]} "
                              f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:5]} "
                              f"({len(result.unexpected_keys)})")
    return LoadedCheckpoint(model=model.to(dtype).eval(), processor=processor)


def load_processor(path: str | Path) -> DeepVisionProcessor:
    """The checkpoint's config, tokenizer and norm stats, without its weights (ONNX Runtime needs no torch model)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory: {_CONTENTS}")
    config = load_config(root)
    norm_stats = NormStats.load(root / NORM_STATS_FILE)
    tokenizer = _load_tokenizer(root)
    try:
        return DeepVisionProcessor(config, tokenizer, norm_stats)
    except ConfigError as err:
        raise CheckpointError(f"{root}: tokenizer or {NORM_STATS_FILE} does not fit {CONFIG_FILE}: {err}") from err


def load_config(root: Path) -> DeepVisionConfig:
    path = root / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: expected the DeepVisionConfig JSON; {_CONTENTS}")
    try:
        return DeepVisionConfig.load_json(path)
    except (json.JSONDecodeError, ConfigError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid DeepVisionConfig: {err}") from err


def load_checkpoint_tokenizer(root: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a checkpoint directory."""
    return _load_tokenizer(root)


def _load_tokenizer(root: Path) -> PreTrainedTokenizerBase:
    for name in TOKENIZER_FILES:
        if not (root / name).is_file():
            raise CheckpointError(f"{root / name} not found: expected the tokenizer saved with save_pretrained")
    return AutoTokenizer.from_pretrained(root)


def placeholder_norm_stats(config: DeepVisionConfig) -> NormStats:
    """Bounds [-1, 1] per dimension: normalised and physical units coincide (random checkpoints only)."""
    def unit(dim: int) -> FeatureStats:
        return FeatureStats(q01=-np.ones(dim), q99=np.ones(dim), mean=np.zeros(dim), std=np.ones(dim))
    return NormStats(action=unit(config.robot.action_dim), state=unit(config.robot.state_dim))


def create_checkpoint_from_base_weights(path: str | Path, config: DeepVisionConfig, norm_stats: NormStats,
                                        dtype: torch.dtype = torch.float32) -> Path:
    """The starting checkpoint of a training run: Qwen3-VL and DINOv3 from the local HF directories named in
    `config` (new modules random), the Qwen tokenizer from the Qwen3-VL directory, the dataset's norm stats."""
    model = DeepVisionVLA.from_base_weights(config, dtype)
    return save_checkpoint(model, norm_stats, backbones.load_qwen_tokenizer(config.vlm), path)


def create_random_checkpoint(path: str | Path, config: DeepVisionConfig | None = None, seed: int = 0,
                             norm_stats: NormStats | None = None) -> Path:
    """A randomly initialised checkpoint (tiny by default) with the byte-level tokenizer; seconds on a CPU."""
    config = config or DeepVisionConfig.tiny()
    torch.manual_seed(seed)
    model = DeepVisionVLA(config)
    return save_checkpoint(model, norm_stats or placeholder_norm_stats(config),
                           build_byte_tokenizer(config.vlm.tokens), path)
