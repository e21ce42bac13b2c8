"""recorder_node parameters: what is recorded, how frames are aligned, video and MCAP output.

Cameras are parallel lists: camera_topics[i] is stored as the video feature
`observation.images.<camera_keys[i]>` at camera_heights_px[i] x camera_widths_px[i]. The alignment
rule (which message feeds each frame) is described in vla_ros/recording/sampler.py and
docs/recording.md.
"""

from __future__ import annotations

import dataclasses
import math
import re

from vla_ros.config.sim import SIM_JOINT_NAMES
from vla_ros.config.schema import param, section
from vla_ros.errors import ConfigError

DEFAULT_JOINTS = SIM_JOINT_NAMES  # one source: the embedded simulated arm's joints (config/sim.py)
COMMAND_TYPES = ("joint_trajectory", "float64_array")
VIDEO_CODECS = ("h264", "mpeg4", "av1")
EPISODE_SOURCES = ("teleop", "policy", "scripted", "intervention")

# Camera keys become part of feature names and paths: keep them to a safe alphabet.
_CAMERA_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    codec: str = param(
        "h264", "Video codec of the per-camera mp4 files: h264 (libx264, decodable everywhere), "
        "mpeg4 (cheapest to encode) or av1 (libsvtav1, LeRobot's default, smallest, slowest)",
        choices=VIDEO_CODECS)
    crf: int = param(
        23, "Constant rate factor (h264, av1) or quantiser scale x 8 (mpeg4): lower = better quality, "
        "bigger files", range=(0, 63))
    preset: str = param(
        "ultrafast", "Encoder speed preset: x264 names (ultrafast .. veryslow) for h264, 0..13 for "
        "av1; ignored by mpeg4")
    keyframe_interval_s: float = param(
        1.0, "Seconds between key frames; also the most video a killed recorder loses [s]",
        range=(0.05, 10.0))

    def __post_init__(self) -> None:  # direct construction (the writer, tests, benches) is checked too
        if self.codec not in VIDEO_CODECS:
            raise ConfigError(f"video.codec: {self.codec!r} is not one of {list(VIDEO_CODECS)}")
        if not 0 <= self.crf <= 63:
            raise ConfigError(f"video.crf: {self.crf} is outside [0, 63]")
        if not (math.isfinite(self.keyframe_interval_s) and self.keyframe_interval_s > 0):
            raise ConfigError(f"video.keyframe_interval_s: must be > 0, got {self.keyframe_interval_s!r}")


@dataclasses.dataclass(frozen=True)
class RecorderConfig:
    dataset_root: str = param(
        "~/vla_ros_datasets/sim_arm", "Dataset directory (LeRobot v3 layout); created if missing, "
        "appended to if it holds a dataset with the same fps, joints, actions and cameras")
    robot_type: str = param("sim_arm", "robot_type written to meta/info.json")
    fps: int = param(30, "Frames per second of the dataset: frame i is sampled at t0 + i / fps [Hz]",
                     range=(1, 1000))
    camera_topics: tuple[str, ...] = param(
        ("/camera/image_raw",), "One image topic per camera; a topic ending in /compressed is read as "
        "sensor_msgs/CompressedImage")
    camera_keys: tuple[str, ...] = param(
        ("front",), "Dataset key per camera (parallel to camera_topics): stored as "
        "observation.images.<key>; letters, digits and _ only")
    camera_heights_px: tuple[int, ...] = param(
        (240,), "Stored image height per camera; images of another size are resized to it and counted "
        "[px]", range=(16, 4096))
    camera_widths_px: tuple[int, ...] = param(
        (320,), "Stored image width per camera [px]", range=(16, 4096))
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState input (observation.state)")
    joint_names: tuple[str, ...] = param(
        DEFAULT_JOINTS, "observation.state order; matched by name in JointState messages")
    command_topic: str = param(
        "/arm_controller/joint_trajectory", "Commands sent to the robot: the frame's action is the "
        "newest command stamped at or before the frame")
    command_type: str = param(
        "joint_trajectory", "Command message: trajectory_msgs/JointTrajectory (first point) or "
        "std_msgs/Float64MultiArray (in action_names order)", choices=COMMAND_TYPES)
    action_names: tuple[str, ...] = param(
        DEFAULT_JOINTS, "action order; JointTrajectory joint_names are matched by name")
    chunk_topic: str = param(
        "/vla/action_chunk", "vla_ros_interfaces/ActionChunk input: per-frame chunk.id and chunk.step; "
        "'' = off")
    instruction_topic: str = param(
        "/vla/instruction", "std_msgs/String: the task of an episode started without one; '' = off")
    toggle_topic: str = param(
        "", "std_msgs/Bool pedal: true starts an episode, false stops and keeps it; '' = off")
    intervention_topic: str = param(
        "", "std_msgs/Bool: true while a human corrects the policy; frames are tagged "
        "intervention=true, source=intervention; '' = off")
    default_source: str = param(
        "teleop", "Episode source when a start request names none", choices=EPISODE_SOURCES)
    default_task: str = param(
        "teleoperated demonstration", "Task of an episode started with no task and no instruction received")
    status_topic: str = param(
        "/vla/recorder/status", "diagnostic_msgs/DiagnosticArray: recording state, frames, drops, disk")
    record_mcap: bool = param(
        False, "Also write one MCAP file per episode with the raw messages (ros2 bag / Foxglove)")
    mcap_topics: tuple[str, ...] = param(
        (), "Topics copied into the MCAP file, among those the recorder subscribes to; empty = all of them")
    max_skew_s: float = param(
        0.1, "A camera or joint-state sample older than this at its frame time marks the frame "
             "stale_input=true and counts a stale frame for that stream [s]", range=(0.001, 10.0))
    max_delay_s: float = param(
        0.2, "How long (in message-stamp time) a frame waits for a late stream before it is built "
             "from what has arrived [s]", range=(0.0, 10.0))
    queue_size_frames: int = param(
        60, "Frames waiting for the encoders; a frame that finds the queue full is dropped and counted",
        range=(2, 10000))
    min_free_disk_mb: int = param(
        2048, "No episode starts below this much free disk; a running episode is stopped and kept "
              "when free space falls below half of it [MB]", range=(0, 10_000_000))
    status_period_s: float = param(1.0, "Period of the recorder status message [s]", range=(0.05, 60.0))
    video: VideoConfig = section(VideoConfig)

    def __post_init__(self) -> None:
        n_cams = len(self.camera_topics)
        for field in ("camera_keys", "camera_heights_px", "camera_widths_px"):
            if len(getattr(self, field)) != n_cams:
                raise ConfigError(f"{field}: has {len(getattr(self, field))} entries but camera_topics has "
                                  f"{n_cams}; give one per camera")
        if len(set(self.camera_topics)) != n_cams or not all(self.camera_topics):
            raise ConfigError(f"camera_topics: must be unique and non-empty, got {list(self.camera_topics)}")
        if len(set(self.camera_keys)) != n_cams:
            raise ConfigError(f"camera_keys: must be unique, got {list(self.camera_keys)}")
        bad_keys = [k for k in self.camera_keys if not _CAMERA_KEY_RE.match(k)]
        if bad_keys:
            raise ConfigError(f"camera_keys: {bad_keys} may only use letters, digits and _")
        odd = [(k, h, w) for k, h, w in zip(self.camera_keys, self.camera_heights_px, self.camera_widths_px)
               if h % 2 or w % 2]
        if odd:
            raise ConfigError(f"camera_heights_px/camera_widths_px: {odd} (key, height, width) must be even "
                              "(yuv420p video)")
        for field in ("joint_names", "action_names"):
            names = getattr(self, field)
            if not names or len(set(names)) != len(names) or not all(names):
                raise ConfigError(f"{field}: must be non-empty, unique and without blanks, got {list(names)}")
        if not self.dataset_root:
            raise ConfigError("dataset_root: must name a directory, got ''")
        if not self.joint_states_topic or not self.command_topic:
            raise ConfigError("joint_states_topic and command_topic: both are required (observation.state "
                              "and action of every frame)")
        unknown = sorted(set(self.mcap_topics) - set(self.subscribed_topics))
        if unknown:
            raise ConfigError(f"mcap_topics: {unknown} are not recorder inputs; choose among "
                              f"{self.subscribed_topics} (empty = all)")
        # Ranges are checked when values come from YAML or ROS; direct construction must not divide by 0.
        if self.fps < 1:
            raise ConfigError(f"fps: must be >= 1, got {self.fps}")
        if not (math.isfinite(self.max_skew_s) and self.max_skew_s > 0.0):
            raise ConfigError(f"max_skew_s: must be a finite number > 0, got {self.max_skew_s!r}")
        if not (math.isfinite(self.max_delay_s) and self.max_delay_s >= 0.0):
            raise ConfigError(f"max_delay_s: must be a finite number >= 0, got {self.max_delay_s!r}")
        if self.queue_size_frames < 2:
            raise ConfigError(f"queue_size_frames: must be >= 2, got {self.queue_size_frames}")
        if self.min_free_disk_mb < 0:
            raise ConfigError(f"min_free_disk_mb: must be >= 0, got {self.min_free_disk_mb}")

    @property
    def subscribed_topics(self) -> list[str]:
        """Every topic the recorder reads ('' entries are switched-off inputs)."""
        topics = [*self.camera_topics, self.joint_states_topic, self.command_topic, self.chunk_topic,
                  self.instruction_topic, self.toggle_topic, self.intervention_topic]
        return [t for t in topics if t]
