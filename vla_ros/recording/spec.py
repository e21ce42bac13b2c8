"""What a dataset holds (DatasetSpec: fixed for the dataset's life) and how a writer behaves
(WriterOptions: may change between runs)."""

from __future__ import annotations

import dataclasses
import math
import re

from vla_ros.config.recorder import EPISODE_SOURCES, VIDEO_CODECS, RecorderConfig
from vla_ros.errors import ConfigError

_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    key: str  # stored as the video feature observation.images.<key>
    height_px: int
    width_px: int

    @property
    def feature(self) -> str:
        return f"observation.images.{self.key}"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything meta/info.json fixes: appending to a dataset requires the same spec."""

    robot_type: str
    fps: int
    joint_names: tuple[str, ...]  # observation.state order (J,)
    action_names: tuple[str, ...]  # action order (A,)
    cameras: tuple[CameraSpec, ...]

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or self.fps < 1:
            raise ConfigError(f"DatasetSpec.fps: must be an integer >= 1 (LeRobot stores an int), got {self.fps!r}")
        for field in ("joint_names", "action_names"):
            names = getattr(self, field)
            if not names or len(set(names)) != len(names) or not all(names):
                raise ConfigError(f"DatasetSpec.{field}: must be non-empty, unique, no blanks; got {list(names)}")
        keys = [c.key for c in self.cameras]
        if len(set(keys)) != len(keys) or not all(_KEY_RE.match(k) for k in keys):
            raise ConfigError(f"DatasetSpec.cameras: keys must be unique, letters/digits/_ only; got {keys}")
        for cam in self.cameras:
            if cam.height_px < 1 or cam.width_px < 1 or cam.height_px % 2 or cam.width_px % 2:
                raise ConfigError(f"DatasetSpec.cameras[{cam.key}]: size {cam.height_px}x{cam.width_px} px must be "
                                  "positive and even (yuv420p video)")

    def camera(self, key: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.key == key:
                return cam
        raise KeyError(key)


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    codec: str = "h264"  # one of VIDEO_CODECS
    crf: int = 23
    preset: str = "ultrafast"
    keyframe_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.codec not in VIDEO_CODECS:
            raise ConfigError(f"VideoOptions.codec: {self.codec!r} is not one of {list(VIDEO_CODECS)}")
        if not 0 <= self.crf <= 63:
            raise ConfigError(f"VideoOptions.crf: {self.crf} is outside [0, 63]")
        if not (math.isfinite(self.keyframe_interval_s) and self.keyframe_interval_s > 0):
            raise ConfigError(f"VideoOptions.keyframe_interval_s: must be > 0, got {self.keyframe_interval_s!r}")


@dataclasses.dataclass(frozen=True)
class WriterOptions:
    max_skew_s: float = 0.1  # sensor sample older than this at its frame -> frame flagged stale
    max_delay_s: float = 0.2  # how long (stamp time) a frame waits for a late stream
    queue_size_frames: int = 60  # frames buffered for the encoders before frames are dropped
    min_free_disk_mb: int = 2048  # refuse to start below; stop a running episode below half
    record_mcap: bool = False
    video: VideoOptions = VideoOptions()

    def __post_init__(self) -> None:
        for field in ("max_skew_s", "max_delay_s"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"WriterOptions.{field}: must be a finite number >= 0, got {value!r}")
        if self.max_skew_s <= 0.0:
            raise ConfigError(f"WriterOptions.max_skew_s: must be > 0, got {self.max_skew_s}")
        if self.queue_size_frames < 2:
            raise ConfigError(f"WriterOptions.queue_size_frames: must be >= 2, got {self.queue_size_frames}")
        if self.min_free_disk_mb < 0:
            raise ConfigError(f"WriterOptions.min_free_disk_mb: must be >= 0, got {self.min_free_disk_mb}")


def spec_from_config(cfg: RecorderConfig) -> DatasetSpec:
    cameras = tuple(CameraSpec(k, h, w) for k, h, w in
                    zip(cfg.camera_keys, cfg.camera_heights_px, cfg.camera_widths_px))
    return DatasetSpec(cfg.robot_type, cfg.fps, cfg.joint_names, cfg.action_names, cameras)


def options_from_config(cfg: RecorderConfig) -> WriterOptions:
    video = VideoOptions(cfg.video.codec, cfg.video.crf, cfg.video.preset, cfg.video.keyframe_interval_s)
    return WriterOptions(cfg.max_skew_s, cfg.max_delay_s, cfg.queue_size_frames, cfg.min_free_disk_mb,
                         cfg.record_mcap, video)


__all__ = ["EPISODE_SOURCES", "CameraSpec", "DatasetSpec", "VideoOptions", "WriterOptions",
           "options_from_config", "spec_from_config"]
