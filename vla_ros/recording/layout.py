"""LeRobot dataset v3.0 layout as vla_ros writes it: paths, features, column names, durable writes.

One episode per file: episode e is stored in chunk e // chunks_size, file e % chunks_size, for the
frame table, every camera's video and the episode's metadata row. LeRobot v3 allows several episodes
per file and locates them through metadata offsets; one per file keeps every finalised episode a set
of closed files that later episodes never touch, and the metadata says so (each episode row carries
its own chunk/file indices, dataset_from_index/to_index, and video from_timestamp = 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_ros.recording.spec import DatasetSpec

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot default)
DATA_FILES_SIZE_IN_MB = 100  # LeRobot defaults; informative only with one episode per file
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
MCAP_PATH = "mcap/chunk-{chunk_index:03d}/episode_{episode_index:06d}.mcap"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
STAGING_DIR = ".staging"
QUARANTINE_DIR = "quarantine"

STATE = "observation.state"
ACTION = "action"
# Columns beyond LeRobot's, one per frame (all in info.json features too).
FRAME_TIME_NS = "frame_time_ns"  # absolute stamp time of the frame, t0 + k / fps
STALE_INPUT = "stale_input"  # some camera or joint-state sample was older than max_skew
INTERVENTION = "intervention"
SOURCE = "source"  # teleop | policy | scripted | intervention
CHUNK_ID = "chunk.id"  # newest ActionChunk stamped <= frame time whose horizon covers it, else -1
CHUNK_STEP = "chunk.step"  # index of the chunk action due at the frame time, else -1
PROV_STATE = "provenance.state.stamp_ns"
PROV_ACTION = "provenance.action.stamp_ns"
PROV_CHUNK = "provenance.chunk.stamp_ns"  # -1 when no chunk


def prov_image(camera_key: str) -> str:
    return f"provenance.images.{camera_key}.stamp_ns"


def chunk_file(episode_index: int) -> tuple[int, int]:
    return episode_index // CHUNKS_SIZE, episode_index % CHUNKS_SIZE


def data_path(episode_index: int) -> str:
    c, f = chunk_file(episode_index)
    return DATA_PATH.format(chunk_index=c, file_index=f)


def video_path(episode_index: int, video_key: str) -> str:
    c, f = chunk_file(episode_index)
    return VIDEO_PATH.format(video_key=video_key, chunk_index=c, file_index=f)


def episodes_path(episode_index: int) -> str:
    c, f = chunk_file(episode_index)
    return EPISODES_PATH.format(chunk_index=c, file_index=f)


def mcap_path(episode_index: int) -> str:
    c, _ = chunk_file(episode_index)
    return MCAP_PATH.format(chunk_index=c, episode_index=episode_index)


def _scalar(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


def build_features(spec: DatasetSpec, video_info: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """info.json features: LeRobot's keys first, then vla_ros's provenance and quality columns."""
    features: dict[str, dict[str, Any]] = {
        STATE: {"dtype": "float32", "shape": [len(spec.joint_names)], "names": list(spec.joint_names)},
        ACTION: {"dtype": "float32", "shape": [len(spec.action_names)], "names": list(spec.action_names)},
    }
    for cam in spec.cameras:
        features[cam.feature] = {"dtype": "video", "shape": [cam.height_px, cam.width_px, 3],
                                 "names": ["height", "width", "channels"], "info": video_info[cam.key]}
    for name in ("timestamp",):
        features[name] = _scalar("float32")
    for name in ("frame_index", "episode_index", "index", "task_index", FRAME_TIME_NS, CHUNK_ID, CHUNK_STEP,
                 PROV_STATE, PROV_ACTION, PROV_CHUNK):
        features[name] = _scalar("int64")
    for cam in spec.cameras:
        features[prov_image(cam.key)] = _scalar("int64")
    features[STALE_INPUT] = _scalar("bool")
    features[INTERVENTION] = _scalar("bool")
    features[SOURCE] = _scalar("string")
    return features


def video_feature_info(fps: int, height_px: int, width_px: int, codec: str) -> dict[str, Any]:
    return {"video.height": height_px, "video.width": width_px, "video.codec": codec,
            "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
            "video.channels": 3, "has_audio": False}


def empty_info(spec: DatasetSpec, codec: str) -> dict[str, Any]:
    video_info = {c.key: video_feature_info(spec.fps, c.height_px, c.width_px, codec) for c in spec.cameras}
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": spec.fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if spec.cameras else None,
        "features": build_features(spec, video_info),
        "vla_ros": {"layout": "one_episode_per_file", "layout_version": 1},
    }


def spec_mismatches(info: dict[str, Any], spec: DatasetSpec) -> list[str]:
    """Why a dataset on disk cannot take episodes recorded with `spec` (empty: it can)."""
    problems = []
    if info.get("fps") != spec.fps:
        problems.append(f"fps is {info.get('fps')} on disk, {spec.fps} requested")
    features = info.get("features", {})
    for key, names in ((STATE, spec.joint_names), (ACTION, spec.action_names)):
        on_disk = features.get(key, {}).get("names")
        if on_disk != list(names):
            problems.append(f"{key} names are {on_disk} on disk, {list(names)} requested")
    disk_cams = {k: f["shape"] for k, f in features.items() if f.get("dtype") == "video"}
    want_cams = {c.feature: [c.height_px, c.width_px, 3] for c in spec.cameras}
    if disk_cams != want_cams:
        problems.append(f"cameras (feature: shape) are {disk_cams} on disk, {want_cams} requested")
    return problems


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)
