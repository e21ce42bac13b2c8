"""What a dataset holds (DatasetSpec: fixed for the dataset's life). How a writer behaves (skew, delay,
queue, disk, MCAP, video) is RecorderConfig's, and may change between runs."""

from __future__ import annotations

import dataclasses
import re

from vla_ros.config.recorder import EPISODE_SOURCES, RecorderConfig
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


def spec_from_config(cfg: RecorderConfig) -> DatasetSpec:
    cameras = tuple(CameraSpec(k, h, w) for k, h, w in
                    zip(cfg.camera_keys, cfg.camera_heights_px, cfg.camera_widths_px))
    return DatasetSpec(cfg.robot_type, cfg.fps, cfg.joint_names, cfg.action_names, cameras)


__all__ = ["EPISODE_SOURCES", "CameraSpec", "DatasetSpec", "spec_from_config"]
