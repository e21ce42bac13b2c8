"""DeepVision-VLA in PyTorch on Hugging Face transformers (no ROS imports here).

Public surface: the config tree, the model, preprocessing, checkpoints and the Policy adapter.
Imported lazily (PEP 562): `vla_ros.model.configuration` must load without torch and transformers,
so policy_node can check a checkpoint's config.json in milliseconds, before seconds of imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "create_random_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "DeepVisionConfig": "configuration",
    "DeepVisionOutput": "modeling_deepvision", "DeepVisionVLA": "modeling_deepvision",
    "NormStats": "normalization",
    "DeepVisionPolicy": "policy",
    "DeepVisionProcessor": "processing", "ModelInputs": "processing",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
