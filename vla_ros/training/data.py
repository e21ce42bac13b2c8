"""Training samples from LeRobot v3 datasets: frame -> camera images, task, state and the next H actions.

Metadata comes through the recorder's LeRobotDatasetReader; frame tables are read here with only the needed
columns and filtered by episode_index, and videos are decoded by timestamp, so any LeRobot v3 dataset works
(several episodes per file too), not only vla_ros's one-episode-per-file layout.

Every episode is checked when the dataset opens (readable parquet, row count = metadata length, finite
values, known task, every video present and long enough). An episode failing a check is skipped with a
warning naming it; one whose video fails later, while decoding, is skipped the same way from then on and its
samples are served from the next usable episode, so a bad file never stops a run.

Images stay uint8 here: DeepVisionProcessor (the same code as inference) resizes and normalises them on the
training device. Actions and states stay in physical units; normalisation uses the NormStats stored in the
checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from vla_ros.observation import resize_frame
from vla_ros.errors import ConfigError, RecordingError
from vla_ros.model.normalization import NormStats
from vla_ros.recording.reader import EpisodeInfo, LeRobotDatasetReader
from vla_ros.recording.video import iter_video_frames, probe_video

log = logging.getLogger(__name__)

STATE = "observation.state"
ACTION = "action"
CAMERA_PREFIX = "observation.images."
SOURCE = "source"  # per frame: teleop | policy | scripted | intervention (vla_ros recordings)
INTERVENTION_SOURCE = "intervention"
_TABLE_COLUMNS = (STATE, ACTION, "timestamp", "task_index", "episode_index")
_MAX_DELTA_STAT_FRAMES = 200_000  # frames sampled for joint_delta statistics (each gives H targets)


class EpisodeUnusable(RecordingError):
    """An episode's files cannot give training samples; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class DatasetInterface:
    """The robot interface shared by all datasets of a run (becomes the checkpoint's RobotConfig)."""

    fps: int
    robot_type: str  # meta/info.json robot_type, the same for every dataset of a run
    joint_names: tuple[str, ...]  # observation.state order (S,)
    action_names: tuple[str, ...]  # action order (A,)
    camera_names: tuple[str, ...]  # chosen cameras, keys without "observation.images."
    image_size_px: tuple[int, int]  # (height, width) every frame is given to the policy at


@dataclasses.dataclass(frozen=True)
class SkippedEpisode:
    dataset: str
    episode_index: int
    reason: str


@dataclasses.dataclass
class EpisodeRecord:
    dataset: str  # dataset root
    episode_index: int
    data_path: Path
    video_paths: tuple[Path, ...]  # per chosen camera
    video_grids: tuple[np.ndarray, ...]  # per camera: (T,) frame numbers in the video (round(t_video * fps))
    states: np.ndarray  # (T, S) float32
    actions: np.ndarray  # (T, A) float32
    task_ids: np.ndarray  # (T,) int64 into ChunkDataset.tasks
    sources: np.ndarray  # (T,) str: each frame's source (the episode's when the table has no source column)
    sample_frames: np.ndarray  # (N,) int64: the frames that are training samples (source_filter), N >= 1
    selected: np.ndarray  # (T,) bool: frames whose source passes source_filter (all True without a filter)

    @property
    def length(self) -> int:
        return int(self.states.shape[0])

    @property
    def sample_count(self) -> int:
        return int(self.sample_frames.shape[0])



def _feature_names(features: dict[str, Any], key: str, root: Path) -> tuple[str, ...]:
    feature = features.get(key)
    if feature is None:
        raise ConfigError(f"{root}: meta/info.json has no '{key}' feature; a training dataset needs it")
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:  # LeRobot also writes {"motors": [...]}
        names = next(iter(names.values()))
    dim = int(feature["shape"][0])
    if not isinstance(names, list) or len(names) != dim or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{root}: feature '{key}' names are {names!r}; need {dim} names (the checkpoint's "
                          "joint/action names come from them and the robot is matched by name)")
    return tuple(names)


def _vector_column(table: pa.Table, name: str, dim: int) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        if values.size != len(column) * dim:
            raise EpisodeUnusable(f"column '{name}' holds {values.size} values for {len(column)} rows of {dim}")
        return values.reshape(len(column), dim)
    raise EpisodeUnusable(f"column '{name}' has type {column.type}, expected a list of {dim} floats")


class _Source:
    """One dataset directory: its reader (metadata) and what the run takes from it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        try:
            self.reader = LeRobotDatasetReader(self.root, max_cached_videos=1)
        except (OSError, ValueError, KeyError, TypeError) as err:  # broken metadata: the whole dataset is unusable
            raise RecordingError(f"{self.root}: cannot read the dataset metadata: {type(err).__name__}: {err}"
                                 ) from err
        info = self.reader.info
        self.fps = int(self.reader.fps)
        self.robot_type = str(info.get("robot_type") or "")
        self.joint_names = _feature_names(info["features"], STATE, self.root)
        self.action_names = _feature_names(info["features"], ACTION, self.root)
        self.cameras = {feature[len(CAMERA_PREFIX):]: feature for feature in self.reader.camera_keys
                        if feature.startswith(CAMERA_PREFIX)}
        self.one_episode_per_file = (info.get("vla_ros") or {}).get("layout") == "one_episode_per_file"

    def camera_size(self, camera: str) -> tuple[int, int]:
        shape = self.reader.features[self.cameras[camera]]["shape"]
        return int(shape[0]), int(shape[1])

    def data_path(self, episode: EpisodeInfo) -> Path:
        row = episode.row
        try:
            return self.root / self.reader.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                                    file_index=row["data/file_index"])
        except KeyError as err:
            raise EpisodeUnusable(f"episode metadata lacks {err}") from err


def _interface(sources: list[_Source], camera_names: Sequence[str], image_size_px: tuple[int, int] | None
               ) -> DatasetInterface:
    """The common robot interface of all sources; ConfigError naming what differs between them."""
    if not sources:
        raise ConfigError("no dataset given: training needs at least one LeRobot dataset directory")
    first = sources[0]
    cameras = tuple(camera_names) or tuple(first.cameras)
    if not cameras:
        raise ConfigError(f"{first.root}: the dataset has no camera (video feature); the policy needs images")
    for source in sources:
        for field in ("robot_type", "fps", "joint_names", "action_names"):
            if getattr(source, field) != getattr(first, field):
                raise ConfigError(f"{source.root}: {field} is {getattr(source, field)}, but {first.root} has "
                                  f"{getattr(first, field)}; every dataset of a run must match")
        missing = [c for c in cameras if c not in source.cameras]
        if missing:
            raise ConfigError(f"{source.root}: has no camera(s) {missing}; it has {sorted(source.cameras)}")
    size = tuple(image_size_px) if image_size_px else first.camera_size(cameras[0])
    if not first.robot_type:
        raise ConfigError(f"{first.root}: meta/info.json has no robot_type; the checkpoint records it so that "
                          "policy_node can refuse to drive another robot with it")
    return DatasetInterface(first.fps, first.robot_type, first.joint_names, first.action_names, cameras,  # type: ignore[arg-type]
                            size)


def read_interface(roots: Sequence[str], camera_names: Sequence[str] = (),
                   image_size_px: tuple[int, int] | None = None) -> DatasetInterface:
    """The robot interface from the datasets' metadata only (no episode is read)."""
    return _interface([_Source(r) for r in roots], camera_names, image_size_px)


class ChunkDataset(Dataset):
    """Samples: one per frame of every usable episode (with source_filter: per frame of those sources).

    item -> {"frames": (C, H_img, W_img, 3) uint8, "instruction": str, "state": (S,) float32,
             "actions": (H, A) float32 physical targets, "action_mask": (H,) bool (False past the episode end,
             and with source_filter on steps from frames of other sources), "weight": float32 scalar
             (intervention_weight for intervention frames, else 1)}

    source_filter keeps the frames whose per-frame `source` is listed (e.g. only the corrections of a DAgger
    round: intervention); intervention_weight up-weights intervention frames in the loss (HG-DAgger style).
    """

    def __init__(self, roots: Sequence[str], chunk_size: int, *, camera_names: Sequence[str] = (),
                 image_size_px: tuple[int, int] | None = None, action_stride_frames: int = 1,
                 action_space: str = "joint_position", frame_cache_mb: int = 2048,
                 task_filter: Sequence[str] = (), source_filter: Sequence[str] = (),
                 intervention_weight: float = 1.0, success_only: bool = False) -> None:
        if chunk_size < 1 or action_stride_frames < 1:
            raise ConfigError(f"chunk_size={chunk_size}, action_stride_frames={action_stride_frames}: both >= 1")
        sources = [_Source(r) for r in roots]
        self.interface = _interface(sources, camera_names, image_size_px)
        if action_space == "joint_delta" and self.interface.action_names != self.interface.joint_names:
            raise ConfigError(f"action_space=joint_delta needs action names equal to joint names, got "
                              f"{self.interface.action_names} vs {self.interface.joint_names}")
        self.chunk_size = chunk_size
        self.stride = action_stride_frames
        self.action_space = action_space
        self.source_filter = tuple(source_filter)
        self.intervention_weight = float(intervention_weight)
        self.tasks: list[str] = []
        self._task_ids: dict[str, int] = {}
        self.skipped: list[SkippedEpisode] = []
        self.filtered_out = 0  # episodes of other tasks (task_filter) or failed (success_only): left out on purpose
        self.episodes: list[EpisodeRecord] = []
        for source in sources:
            for episode in source.reader.episodes:
                if task_filter and not any(part in task for task in episode.tasks for part in task_filter):
                    self.filtered_out += 1
                    continue
                if success_only and not episode.is_success:
                    self.filtered_out += 1
                    continue
                try:
                    record = self._load_episode(source, episode)
                except EpisodeUnusable as err:
                    self._skip(str(source.root), episode.episode_index, str(err))
                    continue
                if record.sample_count == 0:  # no frame of the wanted sources
                    self.filtered_out += 1
                    continue
                self.episodes.append(record)
        if not self.episodes:
            raise RecordingError(f"no usable episode in {[str(s.root) for s in sources]} ({len(self.skipped)} "
                                 f"skipped, {self.filtered_out} of other tasks than {list(task_filter)}, "
                                 f"without frames of sources {list(self.source_filter)}"
                                 f"{' or not successful' if success_only else ''})")
        self._starts = np.cumsum([0] + [e.sample_count for e in self.episodes])
        self._broken: set[int] = set()
        self._cache: collections.OrderedDict[int, list[np.ndarray]] = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit_bytes = frame_cache_mb << 20
        log.info("training data: %d frames in %d episodes from %d dataset(s), %d episode(s) skipped, %d left out "
                 "by the task, source or success filters, %d intervention frames", len(self), len(self.episodes),
                 len(sources), len(self.skipped), self.filtered_out, self.intervention_frames)

    # ---- scanning ----

    def _skip(self, dataset: str, episode_index: int, reason: str) -> None:
        self.skipped.append(SkippedEpisode(dataset, episode_index, reason))
        log.warning("skipping episode %d of dataset %s: %s", episode_index, dataset, reason)

    def _load_episode(self, source: _Source, episode: EpisodeInfo) -> EpisodeRecord:
        path = source.data_path(episode)
        index = episode.episode_index
        has_sources = SOURCE in source.reader.features  # vla_ros recordings; other LeRobot datasets lack it
        try:
            table = pq.read_table(path, columns=list(_TABLE_COLUMNS) + ([SOURCE] if has_sources else []))
            table = table.filter(pc.equal(table.column("episode_index"), index))
        except Exception as err:  # any unreadable or malformed file
            raise EpisodeUnusable(f"frame table {path} is unreadable: {type(err).__name__}: {err}") from err
        rows = table.num_rows
        if rows == 0 or rows != episode.length:
            raise EpisodeUnusable(f"frame table {path} has {rows} rows for the episode, metadata says "
                                  f"{episode.length}")
        states = _vector_column(table, STATE, len(source.joint_names))
        actions = _vector_column(table, ACTION, len(source.action_names))
        for name, values in ((STATE, states), (ACTION, actions)):
            bad = int((~np.isfinite(values)).any(axis=1).sum())
            if bad:
                raise EpisodeUnusable(f"frame table {path}: {bad} rows of '{name}' are not finite")
        task_indices, frame_tasks = np.unique(table.column("task_index").to_numpy(), return_inverse=True)
        unknown = [int(i) for i in task_indices if int(i) not in source.reader.tasks]
        if unknown:
            raise EpisodeUnusable(f"frame table {path}: task_index {unknown} not in meta/tasks.parquet")
        ids = np.asarray([self._task_id(source.reader.tasks[int(i)]) for i in task_indices], np.int64)
        timestamps = table.column("timestamp").to_numpy().astype(np.float64)
        if has_sources:
            frame_sources = np.asarray(table.column(SOURCE).to_pylist(), dtype=object)
        else:
            frame_sources = np.full(rows, episode.source, dtype=object)
        selected = (np.isin(frame_sources, self.source_filter) if self.source_filter
                    else np.ones(rows, dtype=bool))
        paths, grids = [], []
        for camera in self.interface.camera_names:
            feature = source.cameras[camera]
            try:
                video = source.reader.video_path(index, feature)
                start_s = float(episode.row.get(f"videos/{feature}/from_timestamp") or 0.0)
            except KeyError as err:
                raise EpisodeUnusable(f"episode metadata lacks {err}") from err
            grid = np.rint((start_s + timestamps) * source.fps).astype(np.int64)
            self._check_video(video, grid, source.one_episode_per_file)
            paths.append(video)
            grids.append(grid)
        return EpisodeRecord(str(source.root), index, path, tuple(paths), tuple(grids), states, actions,
                             ids[frame_tasks.reshape(-1)], frame_sources, np.flatnonzero(selected), selected)

    def _task_id(self, task: str) -> int:
        if task not in self._task_ids:
            self._task_ids[task] = len(self.tasks)
            self.tasks.append(task)
        return self._task_ids[task]

    @staticmethod
    def _check_video(path: Path, grid: np.ndarray, whole_file: bool) -> None:
        """Header-only checks (no decoding): the file opens and holds enough frames."""
        if not path.is_file():
            raise EpisodeUnusable(f"video {path} is missing")
        try:
            frames = probe_video(path).frames
        except Exception as err:
            raise EpisodeUnusable(f"video {path} is unreadable: {type(err).__name__}: {err}") from err
        if frames <= 0:  # containers without a frame count are checked while decoding
            return
        if whole_file and frames != len(grid):
            raise EpisodeUnusable(f"video {path} has {frames} frames, the frame table {len(grid)}")
        if frames <= int(grid.max()):
            raise EpisodeUnusable(f"video {path} has {frames} frames, the frame table needs frame {int(grid.max())}")

    # ---- statistics ----

    def norm_stats(self, mode: str = "quantile") -> NormStats:
        """q01/q99 (and mean/std) of the training targets and states over every usable episode."""
        states = np.concatenate([e.states for e in self.episodes]).astype(np.float64)
        if self.action_space == "joint_position":
            actions = np.concatenate([e.actions for e in self.episodes]).astype(np.float64)
        else:
            every = max(1, len(self) // _MAX_DELTA_STAT_FRAMES)
            parts = []
            for episode in self.episodes:
                frames = np.arange(0, episode.length, every)
                targets, mask = self._targets(episode, frames)
                parts.append(targets[mask])
            actions = np.concatenate(parts).astype(np.float64)
        return NormStats.from_arrays(actions, states, mode=mode)

    # ---- samples ----

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def episode_lengths(self) -> list[int]:
        """Samples per episode (frames, or the frames of the filtered sources)."""
        return [e.sample_count for e in self.episodes]

    @property
    def intervention_frames(self) -> int:
        return int(sum((e.sources[e.sample_frames] == INTERVENTION_SOURCE).sum() for e in self.episodes))

    def episode_frame_bytes(self, episode: EpisodeRecord) -> int:
        height, width = self.interface.image_size_px
        return episode.length * len(self.interface.camera_names) * height * width * 3

    def _targets(self, episode: EpisodeRecord, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames (F,) -> targets (F, H, A) padded with the last action, mask (F, H) True on real steps."""
        steps = frames[:, None] + self.stride * np.arange(self.chunk_size)[None, :]
        mask = steps < episode.length
        if self.source_filter:  # only steps of the wanted sources supervise the chunk
            mask &= episode.selected[np.minimum(steps, episode.length - 1)]
        targets = episode.actions[np.minimum(steps, episode.length - 1)]
        if self.action_space == "joint_delta":
            targets = targets - episode.states[frames][:, None, :]
        return targets, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1}")
        position = int(np.searchsorted(self._starts, index, side="right")) - 1
        sample = index - int(self._starts[position])
        images = None
        for attempt in range(len(self.episodes)):
            candidate = (position + attempt) % len(self.episodes)
            if candidate in self._broken:
                continue
            try:
                videos = self._videos(candidate)
            except EpisodeUnusable as err:
                self._broken.add(candidate)
                episode = self.episodes[candidate]
                self._skip(episode.dataset, episode.episode_index, f"{err} (found while training)")
                continue
            position = candidate
            frames = self.episodes[candidate].sample_frames
            frame = int(frames[min(sample, len(frames) - 1)])
            images = np.stack([video[frame] for video in videos])  # (C, H_img, W_img, 3)
            break
        if images is None:
            raise RecordingError(f"every episode's video failed to decode ({len(self.episodes)} episodes)")
        episode = self.episodes[position]
        targets, mask = self._targets(episode, np.asarray([frame]))
        return {"frames": torch.from_numpy(images), "instruction": self.tasks[int(episode.task_ids[frame])],
                "state": torch.from_numpy(episode.states[frame].copy()),
                "actions": torch.from_numpy(targets[0].astype(np.float32)),
                "action_mask": torch.from_numpy(mask[0]),
                "weight": torch.tensor(self.intervention_weight if episode.sources[frame] == INTERVENTION_SOURCE
                                       else 1.0, dtype=torch.float32)}

    def _videos(self, position: int) -> list[np.ndarray]:
        """Every chosen camera of one episode, (T, H_img, W_img, 3) uint8 each; decoded once, LRU-cached."""
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        episode = self.episodes[position]
        fps = self.interface.fps
        videos = [self._decode(path, grid, fps) for path, grid in zip(episode.video_paths, episode.video_grids)]
        self._cache[position] = videos
        self._cache_bytes += sum(v.nbytes for v in videos)
        while self._cache_bytes > self._cache_limit_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= sum(v.nbytes for v in evicted)
        return videos

    def _decode(self, path: Path, grid: np.ndarray, fps: int) -> np.ndarray:
        height, width = self.interface.image_size_px
        wanted = {int(k): row for row, k in enumerate(grid)}
        last = int(grid.max())
        out = np.empty((len(grid), height, width, 3), np.uint8)
        found = 0
        try:
            for image, k in iter_video_frames(path, fps):
                if k > last:
                    break
                row = wanted.get(k)
                if row is None:
                    continue
                image = resize_frame(image, height, width)  # the rule policy_node serves with
                out[row] = image
                found += 1
        except Exception as err:  # any decoder failure makes the episode unusable, never the run
            raise EpisodeUnusable(f"video {path} failed to decode: {type(err).__name__}: {err}") from err
        if found != len(grid):
            raise EpisodeUnusable(f"video {path} gave {found} of the {len(grid)} frames of the frame table")
        return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples: tensors along a new batch dim, instructions as a list."""
    return {"frames": torch.stack([s["frames"] for s in samples]),  # (B, C, H_img, W_img, 3) uint8
            "instruction": [s["instruction"] for s in samples],
            "state": torch.stack([s["state"] for s in samples]),  # (B, S)
            "actions": torch.stack([s["actions"] for s in samples]),  # (B, H, A)
            "action_mask": torch.stack([s["action_mask"] for s in samples]),  # (B, H)
            "weight": torch.stack([s["weight"] for s in samples])}  # (B,)


__all__ = ["ChunkDataset", "DatasetInterface", "EpisodeRecord", "EpisodeUnusable", "SkippedEpisode", "collate"]
