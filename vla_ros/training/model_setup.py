"""The model a run starts from: its config (architecture + the dataset's robot interface), weights, tokenizer."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.checkpoint import load_checkpoint, load_checkpoint_tokenizer, load_config
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import build_byte_tokenizer
from vla_ros.training.config import TrainConfig
from vla_ros.training.data import DatasetInterface

log = logging.getLogger(__name__)


def robot_config(config: TrainConfig, interface: DatasetInterface, chunk_size: int) -> RobotConfig:
    """The robot the data was recorded on: names, cameras and image size from the dataset's metadata."""
    return RobotConfig(robot_type=interface.robot_type, joint_names=interface.joint_names,
                       action_names=interface.action_names,
                       action_space=config.action_space, dt_s=config.action_stride_frames / interface.fps,
                       camera_names=interface.camera_names, camera_image_size_px=interface.image_size_px,
                       chunk_size=chunk_size, state_dim=len(interface.joint_names), use_proprio=config.use_proprio)


def architecture(config: TrainConfig) -> DeepVisionConfig:
    """The model config named by --model / --init-checkpoint, with --vlm-dir / --expert-dir filled in."""
    if config.init_checkpoint:
        return load_config(Path(config.init_checkpoint))
    vlm_dir, expert_dir = config.vlm_dir or None, config.expert_dir or None
    if config.model == "tiny":
        if vlm_dir or expert_dir:
            raise ConfigError("model='tiny' is randomly initialised: --vlm-dir/--expert-dir need --model paper "
                              "or a config JSON whose sizes match the weights")
        return DeepVisionConfig.tiny(baseline=config.baseline)
    if config.model == "paper":
        return DeepVisionConfig.paper(vlm_dir, expert_dir, baseline=config.baseline)
    path = Path(config.model)
    if not path.is_file():
        raise ConfigError(f"model={config.model!r}: not 'tiny', 'paper' or an existing DeepVisionConfig JSON file")
    try:
        base = DeepVisionConfig.load_json(path)
    except ValueError as err:  # ConfigError and JSONDecodeError are both ValueErrors
        raise ConfigError(f"model={config.model!r}: not a valid DeepVisionConfig JSON: {err}") from err
    if expert_dir and base.expert is None:
        raise ConfigError(f"expert_dir={expert_dir!r}: {path} is the baseline (no expert)")
    vlm = dataclasses.replace(base.vlm, base_weights_dir=vlm_dir or base.vlm.base_weights_dir)
    expert = None if base.expert is None else dataclasses.replace(
        base.expert, base_weights_dir=expert_dir or base.expert.base_weights_dir)
    return dataclasses.replace(base, vlm=vlm, expert=expert)


def chunk_size(config: TrainConfig) -> int:
    """H: --chunk-size, else the architecture's robot.chunk_size."""
    return config.chunk_size or architecture(config).robot.chunk_size


def model_config(config: TrainConfig, interface: DatasetInterface) -> DeepVisionConfig:
    base = architecture(config)
    robot = robot_config(config, interface, config.chunk_size or base.robot.chunk_size)
    pruning = dataclasses.replace(base.pruning, keep_ratio=config.keep_ratio) if config.keep_ratio else base.pruning
    head = base.head
    if config.head and config.head != head.name:
        head = dataclasses.replace(head, name=config.head, num_query_tokens=0)
    if config.num_query_tokens:
        if head.name == "oft_mlp":
            raise ConfigError("num_query_tokens: the oft_mlp head uses the H action tokens (choose --head "
                              "vla_adapter or vlm4vla)")
        head = dataclasses.replace(head, num_query_tokens=config.num_query_tokens)
    return dataclasses.replace(base, robot=robot, pruning=pruning, head=head)


def initial_model(config: TrainConfig, model_cfg: DeepVisionConfig, base_dtype: torch.dtype = torch.float32,
                  meta: bool = False) -> tuple[DeepVisionVLA, PreTrainedTokenizerBase]:
    """Weights and tokenizer at step 0 (fp32; Hugging Face base weights in base_dtype). Call under a fixed torch
    seed: new modules are random. meta: the module tree only, no weights (FSDP ranks that receive rank 0's)."""
    if meta:
        with torch.device("meta"):
            model = DeepVisionVLA(model_cfg)
        source = Path(config.init_checkpoint) if config.init_checkpoint else None
        if source is not None:
            tokenizer = load_checkpoint_tokenizer(source)
        elif model_cfg.vlm.base_weights_dir:
            tokenizer = backbones.load_qwen_tokenizer(model_cfg.vlm)
        else:
            tokenizer = build_byte_tokenizer(model_cfg.vlm.tokens)
        return model, tokenizer
    if config.init_checkpoint:
        return _from_checkpoint(Path(config.init_checkpoint), model_cfg)
    vlm_dir = model_cfg.vlm.base_weights_dir
    expert_dir = model_cfg.expert.base_weights_dir if model_cfg.expert is not None else None
    vlm = backbones.load_qwen_vl(model_cfg.vlm, base_dtype) if vlm_dir else None
    expert = backbones.load_dinov3(model_cfg.expert, base_dtype) if expert_dir else None
    if not vlm_dir:
        log.warning("no --vlm-dir: Qwen3-VL starts from random weights")
    if model_cfg.expert is not None and not expert_dir:
        log.warning("no --expert-dir: the DINOv3 expert starts from random weights")
    model = DeepVisionVLA(model_cfg, vlm=vlm, expert=expert)
    tokenizer = backbones.load_qwen_tokenizer(model_cfg.vlm) if vlm_dir else build_byte_tokenizer(model_cfg.vlm.tokens)
    return model, tokenizer


def _from_checkpoint(path: Path, model_cfg: DeepVisionConfig) -> tuple[DeepVisionVLA, PreTrainedTokenizerBase]:
    """The checkpoint's weights; tensors whose shape the new robot changes (head, proprio) start fresh."""
    loaded = load_checkpoint(path)
    model = DeepVisionVLA(model_cfg)
    own = model.state_dict()
    state = {k: v for k, v in loaded.model.state_dict().items() if k in own and own[k].shape == v.shape}
    fresh = sorted(set(own) - set(state))
    if fresh:
        log.warning("%s: %d tensor(s) do not fit the dataset's robot and start from random init: %s", path,
                    len(fresh), ", ".join(fresh[:8]) + (" ..." if len(fresh) > 8 else ""))
    model.load_state_dict(state, strict=False)
    return model, loaded.processor.tokenizer
