"""DeepVision-VLA in PyTorch on Hugging Face transformers (no ROS imports here).

Public surface: the config tree, the model, preprocessing, checkpoints and the Policy adapter.
"""

from vla_ros.model.checkpoint import create_random_checkpoint, load_checkpoint, save_checkpoint
from vla_ros.model.configuration import DeepVisionConfig
from vla_ros.model.modeling_deepvision import DeepVisionOutput, DeepVisionVLA
from vla_ros.model.normalization import NormStats
from vla_ros.model.policy import DeepVisionPolicy
from vla_ros.model.processing import DeepVisionProcessor, ModelInputs

__all__ = ["DeepVisionConfig", "DeepVisionOutput", "DeepVisionPolicy", "DeepVisionProcessor", "DeepVisionVLA",
           "ModelInputs", "NormStats", "create_random_checkpoint", "load_checkpoint", "save_checkpoint"]
