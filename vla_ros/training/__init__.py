"""Training DeepVision-VLA on LeRobot v3 datasets (pure PyTorch, no ROS imports).

Public surface: TrainConfig, train() / Trainer, the dataset of action chunks, the masked L1 and ROCKET.
Command line: python -m vla_ros.training.train --help
"""

from vla_ros.training.config import TrainConfig
from vla_ros.training.data import ChunkDataset, DatasetInterface, SkippedEpisode
from vla_ros.training.losses import TrainingObjective, masked_l1
from vla_ros.training.rocket import RocketAlignment
from vla_ros.training.trainer import Trainer, TrainResult, train

__all__ = ["ChunkDataset", "DatasetInterface", "RocketAlignment", "SkippedEpisode", "TrainConfig", "TrainResult",
           "Trainer", "TrainingObjective", "masked_l1", "train"]
