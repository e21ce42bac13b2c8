"""Episode recording: LeRobot v3 datasets (parquet + mp4 per camera) and MCAP, crash-safe.

Pure Python (numpy, pyarrow, PyAV, OpenCV, mcap): no ROS imports; recorder_node adapts messages.
The writer's options are recorder_node's own config (vla_ros.config.recorder.RecorderConfig): one set of
defaults and checks for the node, the writer, tests and benches.
"""

from vla_ros.recording.mcap_io import McapEpisodeWriter, ros2msg_definition, salvage_mcap
from vla_ros.recording.reader import EpisodeInfo, LeRobotDatasetReader
from vla_ros.recording.sampler import FrameSampler, SampledFrame
from vla_ros.recording.spec import CameraSpec, DatasetSpec, spec_from_config
from vla_ros.recording.validate import INFO_SCHEMA, ValidationReport, validate_dataset
from vla_ros.recording.writer import DatasetWriter, EpisodeSummary, RecoveryReport, WriterStatus

__all__ = ["CameraSpec", "DatasetSpec", "DatasetWriter", "EpisodeInfo", "EpisodeSummary", "FrameSampler",
           "INFO_SCHEMA", "LeRobotDatasetReader", "McapEpisodeWriter", "RecoveryReport", "SampledFrame",
           "ValidationReport", "WriterStatus",
           "ros2msg_definition", "salvage_mcap", "spec_from_config", "validate_dataset"]
