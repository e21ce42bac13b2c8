"""Builders of tiny-config models, processors and inputs for the model tests (CPU, fp32, seconds)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.normalization import NormStats
from vla_ros.model.processing import DeepVisionProcessor, ModelInputs, build_byte_tokenizer
from vla_ros.types import Observation

INSTRUCTIONS = ("pick up the red cube", "open the top drawer slowly")


def make_processor(config: DeepVisionConfig) -> DeepVisionProcessor:
    rng = np.random.default_rng(0)
    robot = config.robot
    stats = NormStats.from_arrays(rng.normal(size=(500, robot.action_dim)), rng.normal(size=(500, robot.state_dim)))
    return DeepVisionProcessor(config, build_byte_tokenizer(config.vlm.tokens), stats)


def make_model(config: DeepVisionConfig, seed: int = 0) -> DeepVisionVLA:
    torch.manual_seed(seed)
    return DeepVisionVLA(config).eval()


def make_frames(config: DeepVisionConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    robot = config.robot
    shape = (batch, len(robot.camera_names), *robot.camera_image_size_px, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def make_inputs(processor: DeepVisionProcessor, batch: int = 2, seed: int = 0) -> ModelInputs:
    config = processor.config
    states = torch.randn(batch, config.robot.state_dim, generator=torch.Generator().manual_seed(seed))
    return processor(make_frames(config, batch, seed), list(INSTRUCTIONS[:batch]), states)


def make_observation(instruction: str = "pick up the cube", seed: int = 0) -> Observation:
    """One 240x320 camera frame and a 7-joint state, as the shipped tiny config expects."""
    rng = np.random.default_rng(seed)
    return Observation(images=(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),), state=rng.normal(size=7),
                       instruction=instruction, stamp_ns=123)


def unequal_depths_config() -> DeepVisionConfig:
    """6 LLM layers, 5 expert layers, 3 coupled pairs, two cameras, proprio.

    The tiny preset's equal depths (4 and 4, 2 coupled) make "the last n" and "the first n" expert layers
    differ but pair LLM layer i with expert layer i; here the pairs are (3, 2), (4, 3), (5, 4), so a wrong
    offset on either side shows. Saliency layers (1, 2) are neither the first nor the last shallow layer.
    """
    base = DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True, camera_names=("front", "wrist")))
    return dataclasses.replace(
        base, vlm=dataclasses.replace(base.vlm, text=dataclasses.replace(base.vlm.text, num_layers=6)),
        expert=dataclasses.replace(base.expert, num_layers=5),
        coupling=dataclasses.replace(base.coupling, num_layers=3),
        pruning=dataclasses.replace(base.pruning, saliency_layers=(1, 2)))
