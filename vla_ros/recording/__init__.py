"""Episode recording: LeRobot v3 datasets (parquet + mp4 per camera) and MCAP, crash-safe.

Pure Python (numpy, pyarrow, PyAV, OpenCV, mcap): no ROS imports; recorder_node adapts messages.
"""

from vla_ros.recording.mcap_io import McapEpisodeWriter, ros2msg_definition, salvage_mcap
from vla_ros.recording.reader import EpisodeInfo, LeRobotDatasetReader
from vla_ros.recording.sampler import FrameSampler, SampledFrame
from vla_ros.recording.spec import (CameraSpec, DatasetSpec, VideoOptions, WriterOptions, options_from_config,
                                    spec_from_config)
from vla_ros.recording.validate import INFO_SCHEMA, ValidationReport, validate_dataset
from vla_ros.recording.writer import DatasetWriter, EpisodeSummary, RecoveryReport, WriterStatus

__all__ = ["CameraSpec", "DatasetSpec", "DatasetWriter", "EpisodeInfo", "EpisodeSummary", "FrameSampler",
           "INFO_SCHEMA", "LeRobotDatasetReader", "McapEpisodeWriter", "RecoveryReport", "SampledFrame",
           "ValidationReport", "VideoOptions", "WriterOptions", "WriterStatus", "options_from_config",
           "ros2msg_definition", "salvage_mcap", "spec_from_config", "validate_dataset"]
