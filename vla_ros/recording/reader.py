"""Random-access reader of a vla_ros (LeRobot v3) dataset, for training and inspection.

Frames are addressed by their global `index` (0 .. len-1). Frame tables load per episode on first
use and stay cached (they are small); a camera's video decodes whole on first use and stays in a
small LRU cache, so reading an episode frame by frame decodes each video once.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla_ros.errors import RecordingError
from vla_ros.recording import layout
from vla_ros.recording.video import decode_video, iter_video_frames


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    episode_index: int
    length: int
    dataset_from_index: int
    dataset_to_index: int
    tasks: tuple[str, ...]
    source: str
    is_success: bool
    recovered: bool
    stop_reason: str
    report: dict[str, Any]  # counts and warnings written by the recorder
    row: dict[str, Any]  # the full metadata row (chunk/file indices, stats/...)


class LeRobotDatasetReader:
    def __init__(self, root: str | Path, max_cached_videos: int = 2) -> None:
        self.root = Path(root).expanduser()
        info_path = self.root / layout.INFO_PATH
        if not info_path.exists():
            raise RecordingError(f"{self.root} is not a dataset: {layout.INFO_PATH} is missing")
        self.info: dict[str, Any] = layout.read_json(info_path)
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.camera_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.tasks: dict[int, str] = {}
        if (self.root / layout.TASKS_PATH).exists():
            t = pq.read_table(self.root / layout.TASKS_PATH)
            self.tasks = dict(zip(t.column("task_index").to_pylist(), t.column("task").to_pylist()))
        stats_path = self.root / layout.STATS_PATH
        self.stats: dict[str, Any] = layout.read_json(stats_path) if stats_path.exists() else {}
        self.episodes = self._load_episodes()
        self._starts = [e.dataset_from_index for e in self.episodes]
        self._tables: dict[int, dict[str, np.ndarray]] = {}
        self._videos: collections.OrderedDict[tuple[int, str], np.ndarray] = collections.OrderedDict()
        self._max_cached_videos = max(1, max_cached_videos)

    def _load_episodes(self) -> list[EpisodeInfo]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        rows = []
        for path in files:
            rows.extend(pq.read_table(path).to_pylist())
        rows.sort(key=lambda r: r["episode_index"])
        episodes = []
        for r in rows:
            report = json.loads(r["vla_ros/report"]) if r.get("vla_ros/report") else {}
            episodes.append(EpisodeInfo(int(r["episode_index"]), int(r["length"]), int(r["dataset_from_index"]),
                                        int(r["dataset_to_index"]), tuple(r["tasks"]), r.get("source", ""),
                                        bool(r.get("is_success", False)), bool(r.get("recovered", False)),
                                        r.get("stop_reason", ""), report, r))
        return episodes

    # --- sizes and boundaries -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.episodes[-1].dataset_to_index if self.episodes else 0

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode_bounds(self, episode_index: int) -> tuple[int, int]:
        """Global [from, to) frame indices of an episode."""
        e = self._episode(episode_index)
        return e.dataset_from_index, e.dataset_to_index

    def episode_of(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} outside 0..{len(self) - 1}")
        return self.episodes[bisect.bisect_right(self._starts, index) - 1].episode_index

    def _episode(self, episode_index: int) -> EpisodeInfo:
        if not 0 <= episode_index < len(self.episodes):
            raise IndexError(f"episode {episode_index} outside 0..{len(self.episodes) - 1}")
        return self.episodes[episode_index]

    # --- frame tables ---------------------------------------------------------------------------
    def episode_table(self, episode_index: int) -> dict[str, np.ndarray]:
        """Every non-video column of an episode: vectors as (N, D) arrays, scalars as (N,)."""
        if episode_index not in self._tables:
            e = self._episode(episode_index)
            table = pq.read_table(self.root / self._data_path(e))
            cols: dict[str, np.ndarray] = {}
            for name in table.column_names:
                col = table.column(name).combine_chunks()
                if pa.types.is_fixed_size_list(col.type):
                    cols[name] = np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
                elif pa.types.is_string(col.type):
                    cols[name] = np.asarray(col.to_pylist(), dtype=object)
                else:
                    cols[name] = col.to_numpy(zero_copy_only=False)
            self._tables[episode_index] = cols
        return self._tables[episode_index]

    def _data_path(self, e: EpisodeInfo) -> str:
        return self.info["data_path"].format(chunk_index=e.row["data/chunk_index"],
                                             file_index=e.row["data/file_index"])

    def video_path(self, episode_index: int, camera_feature: str) -> Path:
        e = self._episode(episode_index)
        return self.root / self.info["video_path"].format(
            video_key=camera_feature, chunk_index=e.row[f"videos/{camera_feature}/chunk_index"],
            file_index=e.row[f"videos/{camera_feature}/file_index"])

    # --- video ----------------------------------------------------------------------------------
    def episode_video(self, episode_index: int, camera_feature: str) -> np.ndarray:
        """(N, H_img, W_img, 3) uint8 RGB, row i = the episode's frame i; decoded once, then cached."""
        key = (episode_index, camera_feature)
        if key in self._videos:
            self._videos.move_to_end(key)
            return self._videos[key]
        if camera_feature not in self.camera_keys:
            raise KeyError(f"{camera_feature!r} is not a video feature; have {self.camera_keys}")
        frames, grid = decode_video(self.video_path(episode_index, camera_feature), self.fps)
        table = self.episode_table(episode_index)
        want = np.rint(table["timestamp"].astype(np.float64) * self.fps).astype(np.int64)
        if len(grid) != len(want) or not np.array_equal(grid, want):
            raise RecordingError(f"episode {episode_index} {camera_feature}: video has {len(grid)} frames, the "
                                 f"table {len(want)}, or their timestamps differ")
        self._videos[key] = frames
        while len(self._videos) > self._max_cached_videos:
            self._videos.popitem(last=False)
        return frames

    def iter_episode_video(self, episode_index: int, camera_feature: str) -> Iterator[np.ndarray]:
        """Frames one at a time without caching (for episodes too long to hold decoded)."""
        for image, _ in iter_video_frames(self.video_path(episode_index, camera_feature), self.fps):
            yield image

    # --- single frames --------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_frame(index)

    def get_frame(self, index: int, with_images: bool = True) -> dict[str, Any]:
        """One frame: every column (vectors as float32 arrays), the task text and, optionally, images."""
        ep = self.episode_of(index)
        table = self.episode_table(ep)
        i = index - self.episodes[ep].dataset_from_index
        frame: dict[str, Any] = {}
        for name, col in table.items():
            value = col[i]
            frame[name] = value.item() if isinstance(value, np.generic) else value
        frame["task"] = self.tasks.get(int(frame["task_index"]), "")
        if with_images:
            for cam in self.camera_keys:
                frame[cam] = self.episode_video(ep, cam)[i]
        return frame
