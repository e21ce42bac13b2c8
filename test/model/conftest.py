"""Tiny-config fixtures for the model tests (CPU, fp32, seconds)."""

from __future__ import annotations

import pytest

from test.model.tiny import make_model, make_processor
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import DeepVisionProcessor


@pytest.fixture
def tiny_config() -> DeepVisionConfig:
    return DeepVisionConfig.tiny()


@pytest.fixture
def tiny_processor(tiny_config) -> DeepVisionProcessor:
    return make_processor(tiny_config)


@pytest.fixture
def tiny_model(tiny_config) -> DeepVisionVLA:
    return make_model(tiny_config)
