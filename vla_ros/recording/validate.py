"""validate_dataset: check a dataset directory against the documented schema (docs/recording.md).

INFO_SCHEMA and EPISODE_COLUMNS are the machine-readable form of that schema; a small checker
below understands the JSON-schema subset they use (type, required, properties, const, minimum,
items, additionalProperties as a schema). Errors make the dataset unusable; warnings (dropped
frames leaving timestamp holes, recovered episodes, leftovers in .staging) are worth a look.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from vla_ros.recording import layout
from vla_ros.recording.video import probe_video

_FEATURE_SCHEMA = {
    "type": "object",
    "required": ["dtype", "shape", "names"],
    "properties": {
        "dtype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "names": {"type": ["array", "null"]},
        "info": {"type": "object"},
    },
}
_VIDEO_INFO_SCHEMA = {
    "type": "object",
    "required": ["video.height", "video.width", "video.codec", "video.pix_fmt", "video.fps", "video.channels"],
    "properties": {"video.height": {"type": "integer"}, "video.width": {"type": "integer"},
                   "video.codec": {"type": "string"}, "video.pix_fmt": {"type": "string"},
                   "video.fps": {"type": "integer"}, "video.channels": {"const": 3}},
}
INFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                 "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path",
                 "features"],
    "properties": {
        "codebase_version": {"const": layout.CODEBASE_VERSION},
        "robot_type": {"type": ["string", "null"]},
        "total_episodes": {"type": "integer", "minimum": 0},
        "total_frames": {"type": "integer", "minimum": 0},
        "total_tasks": {"type": "integer", "minimum": 0},
        "chunks_size": {"type": "integer", "minimum": 1},
        "data_files_size_in_mb": {"type": "integer", "minimum": 1},
        "video_files_size_in_mb": {"type": "integer", "minimum": 1},
        "fps": {"type": "integer", "minimum": 1},
        "splits": {"type": "object"},
        "data_path": {"const": layout.DATA_PATH},
        "video_path": {"type": ["string", "null"]},
        "features": {"type": "object", "additionalProperties": _FEATURE_SCHEMA},
    },
}
REQUIRED_FEATURES = {"observation.state": "float32", "action": "float32", "timestamp": "float32",
                     "frame_index": "int64", "episode_index": "int64", "index": "int64", "task_index": "int64"}
# meta/episodes/chunk-*/file-*.parquet columns: LeRobot's, then vla_ros's; per camera feature F also
# videos/F/chunk_index, videos/F/file_index, videos/F/from_timestamp, videos/F/to_timestamp, and
# stats/<feature>/{min,max,mean,std,count} per stats feature.
EPISODE_COLUMNS: dict[str, str] = {
    "episode_index": "int64", "tasks": "list<string>", "length": "int64",
    "meta/episodes/chunk_index": "int64", "meta/episodes/file_index": "int64",
    "data/chunk_index": "int64", "data/file_index": "int64",
    "dataset_from_index": "int64", "dataset_to_index": "int64",
    "source": "string", "is_success": "bool", "notes": "string", "stop_reason": "string", "recovered": "bool",
    "start_time_ns": "int64", "video_codec": "string", "mcap_path": "string", "vla_ros/report": "string (JSON)",
}
STATS_KEYS = ("min", "max", "mean", "std", "count")

_JSON_TYPES = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[name])


def check_schema(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Errors of `value` against the JSON-schema subset used in this module."""
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        return [f"{where}: expected {schema['const']!r}, got {value!r}"]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__} {value!r}"]
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        errors.append(f"{where}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing required key {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += check_schema(value[key], sub, f"{where}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, v in value.items():
                if key not in schema.get("properties", {}):
                    errors += check_schema(v, extra, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += check_schema(v, schema["items"], f"{where}[{i}]")
    return errors


@dataclasses.dataclass
class ValidationReport:
    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        lines = [f"ERROR {e}" for e in self.errors] + [f"warning {w}" for w in self.warnings]
        return "\n".join(lines) if lines else "dataset is valid"


def validate_dataset(root: str | Path, check_videos: bool = True) -> ValidationReport:
    """Check meta/info.json, tasks, stats, every episode's metadata row, frame table and videos."""
    root = Path(root)
    rep = ValidationReport()
    info_path = root / layout.INFO_PATH
    if not info_path.exists():
        rep.errors.append(f"{layout.INFO_PATH} is missing")
        return rep
    try:
        info = layout.read_json(info_path)
    except json.JSONDecodeError as err:
        rep.errors.append(f"{layout.INFO_PATH} is not JSON: {err}")
        return rep
    rep.errors += [f"info.json {e}" for e in check_schema(info, INFO_SCHEMA)]
    if rep.errors:
        return rep
    features = info["features"]
    for name, dtype in REQUIRED_FEATURES.items():
        if features.get(name, {}).get("dtype") != dtype:
            rep.errors.append(f"info.json features.{name}: expected dtype {dtype}, got {features.get(name)}")
    video_features = [k for k, f in features.items() if f["dtype"] == "video"]
    for key in video_features:
        rep.errors += [f"info.json features.{key}.info {e}"
                       for e in check_schema(features[key].get("info"), _VIDEO_INFO_SCHEMA)]

    tasks: dict[int, str] = {}
    if (root / layout.TASKS_PATH).exists():
        t = pq.read_table(root / layout.TASKS_PATH)
        if {"task_index", "task"} - set(t.column_names):
            rep.errors.append(f"{layout.TASKS_PATH}: needs columns task_index and task, has {t.column_names}")
        else:
            tasks = dict(zip(t.column("task_index").to_pylist(), t.column("task").to_pylist()))
            if sorted(tasks) != list(range(len(tasks))):
                rep.errors.append(f"{layout.TASKS_PATH}: task_index must be 0..{len(tasks) - 1}, got {sorted(tasks)}")
    if info["total_tasks"] != len(tasks):
        rep.errors.append(f"info.json total_tasks is {info['total_tasks']} but tasks.parquet has {len(tasks)}")

    rows = []
    for path in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    rows.sort(key=lambda r: r.get("episode_index", -1))
    if [r.get("episode_index") for r in rows] != list(range(len(rows))):
        rep.errors.append(f"episode indices must be 0..{len(rows) - 1} without gaps, got "
                          f"{[r.get('episode_index') for r in rows]}")
    if info["total_episodes"] != len(rows):
        rep.errors.append(f"info.json total_episodes is {info['total_episodes']}, meta/episodes has {len(rows)} rows")
    expected_from = 0
    for r in rows:
        _check_episode(root, info, r, tasks, expected_from, video_features, check_videos, rep)
        expected_from = r.get("dataset_to_index", expected_from)
    if info["total_frames"] != expected_from:
        rep.errors.append(f"info.json total_frames is {info['total_frames']}, the episodes hold {expected_from}")
    if rows:
        if info["splits"].get("train") != f"0:{len(rows)}":
            rep.errors.append(f"info.json splits.train is {info['splits'].get('train')!r}, expected '0:{len(rows)}'")
        stats_path = root / layout.STATS_PATH
        if not stats_path.exists():
            rep.errors.append(f"{layout.STATS_PATH} is missing")
        else:
            stats = layout.read_json(stats_path)
            for name in ["observation.state", "action", *video_features]:
                st = stats.get(name)
                if st is None or any(k not in st for k in STATS_KEYS):
                    rep.errors.append(f"stats.json {name}: needs {list(STATS_KEYS)}")
                    continue
                want = (3, 1, 1) if name in video_features else tuple(features[name]["shape"])
                for k in ("min", "max", "mean", "std"):
                    if np.asarray(st[k]).shape != want:
                        rep.errors.append(f"stats.json {name}.{k}: shape {np.asarray(st[k]).shape}, expected {want}")
    staging = root / layout.STAGING_DIR
    if staging.is_dir() and any(staging.iterdir()):
        rep.warnings.append(f"{layout.STAGING_DIR} holds {sorted(p.name for p in staging.iterdir())}: an episode is "
                            "recording, or a crashed one awaits recovery (start a writer on this dataset)")
    return rep


def _check_episode(root: Path, info: dict, r: dict, tasks: dict[int, str], expected_from: int,
                   video_features: list[str], check_videos: bool, rep: ValidationReport) -> None:
    e = r.get("episode_index")
    missing = [c for c in EPISODE_COLUMNS if c not in r]
    for feature in video_features:
        missing += [f"videos/{feature}/{k}" for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
                    if f"videos/{feature}/{k}" not in r]
    for feature in ["observation.state", "action", *video_features]:
        missing += [f"stats/{feature}/{k}" for k in STATS_KEYS if f"stats/{feature}/{k}" not in r]
    if missing:
        rep.errors.append(f"episode {e}: metadata misses columns {missing}")
        return
    length = r["length"]
    if r["dataset_from_index"] != expected_from or r["dataset_to_index"] != expected_from + length:
        rep.errors.append(f"episode {e}: dataset_from/to_index {r['dataset_from_index']}..{r['dataset_to_index']}, "
                          f"expected {expected_from}..{expected_from + length}")
    if r["recovered"]:
        rep.warnings.append(f"episode {e} was recovered after a crash")
    data = root / info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
    if not data.exists():
        rep.errors.append(f"episode {e}: frame table {data.relative_to(root)} is missing")
        return
    table = pq.read_table(data)
    want_cols = [k for k, f in info["features"].items() if f["dtype"] != "video"]
    if sorted(table.column_names) != sorted(want_cols):
        rep.errors.append(f"episode {e}: frame table columns {sorted(table.column_names)} differ from the features "
                          f"{sorted(want_cols)}")
        return
    if table.num_rows != length:
        rep.errors.append(f"episode {e}: frame table has {table.num_rows} rows, metadata says {length}")
        return
    fps = info["fps"]
    ep_col = table.column("episode_index").to_numpy()
    index = table.column("index").to_numpy()
    frame_index = table.column("frame_index").to_numpy()
    ts = table.column("timestamp").to_numpy().astype(np.float64)
    if not np.all(ep_col == e):
        rep.errors.append(f"episode {e}: episode_index column holds other values {sorted(set(ep_col.tolist()))}")
    if not np.array_equal(frame_index, np.arange(length)):
        rep.errors.append(f"episode {e}: frame_index is not 0..{length - 1}")
    if not np.array_equal(index, np.arange(expected_from, expected_from + length)):
        rep.errors.append(f"episode {e}: index is not {expected_from}..{expected_from + length - 1}")
    task_idx = set(table.column("task_index").to_numpy().tolist())
    if not task_idx <= set(tasks):
        rep.errors.append(f"episode {e}: task_index {sorted(task_idx - set(tasks))} not in tasks.parquet")
    steps = np.rint(np.diff(ts) * fps)
    if np.any(steps < 1):
        rep.errors.append(f"episode {e}: timestamps not increasing by at least 1/fps")
    elif np.any(steps > 1):
        rep.warnings.append(f"episode {e}: {int(np.sum(steps - 1))} frames missing from the timestamp grid "
                            "(dropped while recording)")
    for feature in video_features:
        video = root / info["video_path"].format(video_key=feature, chunk_index=r[f"videos/{feature}/chunk_index"],
                                                 file_index=r[f"videos/{feature}/file_index"])
        if not video.exists():
            rep.errors.append(f"episode {e}: video {video.relative_to(root)} is missing")
            continue
        if check_videos:
            probe = probe_video(video)
            h, w, _ = info["features"][feature]["shape"]
            if probe.frames != length:
                rep.errors.append(f"episode {e} {feature}: video has {probe.frames} frames, metadata {length}")
            if (probe.height_px, probe.width_px) != (h, w):
                rep.errors.append(f"episode {e} {feature}: video is {probe.height_px}x{probe.width_px}, "
                                  f"feature {h}x{w}")
    if r["mcap_path"] and not (root / r["mcap_path"]).exists():
        rep.errors.append(f"episode {e}: MCAP {r['mcap_path']} is missing")
