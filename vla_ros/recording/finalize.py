"""Turning a staging directory into a finalised episode, atomically, and recovering after a crash.

Staging directory <root>/.staging/episode_NNNNNN/ while an episode records:
    episode.json        task, source, start time, then how it ended (written at stop)
    frames.arrows       Arrow IPC stream of frame rows, one record batch per second
    video_<camera>.mp4  fragmented mp4 per camera (see video.py)
    image_stats_<camera>.json, report.json   counters and image statistics
    episode.mcap        optional raw messages
Finalising builds every output file under staging/commit/ at its dataset-relative path, including
the new meta/tasks.parquet, meta/stats.json and meta/info.json, fsyncs them, then writes the COMMIT
marker (the commit point). Until then nothing is moved out of the staging directory (the MCAP is
hard-linked), so a crash before the marker leaves every staged file for recovery. Applying moves
each file into place with os.replace, info.json last, then renames the staging directory to
<name>.removed and deletes it. Applying again after a crash is harmless (moved files are gone from
staging), so a staging directory with COMMIT is always completed at the next start.

A staging directory without COMMIT is an episode cut short (kill -9, power loss): its rows are read
up to the last complete record batch, each video up to its last complete fragment (and checked
frame by frame by decoding), the MCAP up to its last complete chunk (chunks close every second);
frames present in the table and in every video are kept and the episode is finalised with
recovered=true, its report counting what was kept. If nothing usable is
left, the directory moves to <root>/quarantine/ with a REASON.txt; finalised episodes are never
touched either way.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from vla_ros import fileio
from vla_ros.errors import RecordingError
from vla_ros.recording import layout
from vla_ros.recording.mcap_io import salvage_mcap
from vla_ros.recording.stats import NUMERIC_STATS_FEATURES, aggregate, numeric_stats
from vla_ros.recording.video import FinalVideo, ImageStats, finalize_video, iter_video_frames

log = logging.getLogger(__name__)

EPISODE_JSON = "episode.json"
FRAMES_FILE = "frames.arrows"
REPORT_JSON = "report.json"
MCAP_FILE = "episode.mcap"
COMMIT_DIR = "commit"
COMMIT_MARKER = "COMMIT"


def video_file(camera_key: str) -> str:
    return f"video_{camera_key}.mp4"


def image_stats_file(camera_key: str) -> str:
    return f"image_stats_{camera_key}.json"


def staging_frames_schema(joint_count: int, action_count: int, camera_keys: list[str]) -> pa.Schema:
    """Rows as the writer streams them; dataset indices are assigned only when finalising."""
    fields = [
        pa.field("grid_index", pa.int64()),
        pa.field(layout.FRAME_TIME_NS, pa.int64()),
        pa.field(layout.STATE, pa.list_(pa.float32(), joint_count)),
        pa.field(layout.ACTION, pa.list_(pa.float32(), action_count)),
        pa.field(layout.PROV_STATE, pa.int64()),
        pa.field(layout.PROV_ACTION, pa.int64()),
        pa.field(layout.PROV_CHUNK, pa.int64()),
        *[pa.field(layout.prov_image(k), pa.int64()) for k in camera_keys],
        pa.field(layout.CHUNK_ID, pa.int64()),
        pa.field(layout.CHUNK_STEP, pa.int64()),
        pa.field(layout.STALE_INPUT, pa.bool_()),
        pa.field(layout.INTERVENTION, pa.bool_()),
        pa.field(layout.SOURCE, pa.string()),
    ]
    return pa.schema(fields)


@dataclasses.dataclass
class DatasetMeta:
    """In-memory copy of meta/info.json, tasks.parquet and stats.json (kept equal to the disk)."""

    info: dict[str, Any]
    tasks: dict[str, int]  # task -> task_index
    stats: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> "DatasetMeta":
        info = layout.read_json(root / layout.INFO_PATH)
        tasks: dict[str, int] = {}
        if (root / layout.TASKS_PATH).exists():
            table = pq.read_table(root / layout.TASKS_PATH)
            tasks = dict(zip(table.column("task").to_pylist(), table.column("task_index").to_pylist()))
        stats = layout.read_json(root / layout.STATS_PATH) if (root / layout.STATS_PATH).exists() else {}
        return cls(info, tasks, stats)


def tasks_table(tasks: dict[str, int]) -> pa.Table:
    """meta/tasks.parquet with the pandas metadata LeRobot relies on (task is the DataFrame index)."""
    ordered = sorted(tasks.items(), key=lambda kv: kv[1])
    table = pa.table({"task_index": pa.array([i for _, i in ordered], pa.int64()),
                      "task": pa.array([t for t, _ in ordered], pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_staged_rows(path: Path, schema: pa.Schema) -> pa.Table:
    """Every complete record batch of an Arrow IPC stream (a crash leaves a torn last one)."""
    batches = []
    try:
        with open(path, "rb") as f:
            reader = ipc.open_stream(f)
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        log.info("frame table %s ends in an unreadable part after %d batches: %s", path, len(batches), err)
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)


def _is_prefix(kept: list[int], full: tuple[int, ...] | list[int]) -> bool:
    return list(full[: len(kept)]) == kept


class Unrecoverable(RecordingError):
    """Nothing of a staged episode can be kept; the reason goes into the quarantine note."""


@dataclasses.dataclass(frozen=True)
class CommitResult:
    episode_index: int
    length: int
    duration_s: float
    warnings: tuple[str, ...]
    mcap_path: str  # dataset-relative, '' when none
    report: dict[str, Any]


def build_commit(staging: Path, meta: DatasetMeta, *, fps: int, camera_keys: list[str],
                 joint_count: int, action_count: int, recovered: bool) -> CommitResult:
    """Write the episode's final files under staging/commit/ and the COMMIT marker; updates `meta`.

    Steps: the frames every stream holds (table and videos agree), the frame table, the episode's stats,
    its metadata row, the dataset's new meta files, then everything fsynced and the marker last.
    Raises Unrecoverable when no frame survives (nothing is committed then).
    """
    episode = layout.read_json(staging / EPISODE_JSON)
    commit = staging / COMMIT_DIR
    if commit.exists():
        shutil.rmtree(commit)  # a finalisation cut short before its marker: start over
    commit.mkdir()
    schema = staging_frames_schema(joint_count, action_count, camera_keys)
    rows = read_staged_rows(staging / FRAMES_FILE, schema)
    row_grid = rows.column("grid_index").to_pylist()
    if not row_grid:
        raise Unrecoverable("no complete frame row was written")
    episode_index = int(meta.info["total_episodes"])
    kept = _final_videos(staging, commit, episode_index, row_grid, fps, camera_keys, recovered)
    n = len(kept)
    rows = rows.slice(0, n)
    task = episode["task"]
    task_index = meta.tasks.get(task, len(meta.tasks))
    from_index = int(meta.info["total_frames"])
    table = _write_frame_table(commit, rows, schema, kept, episode_index, task_index, from_index, fps)
    ep_stats = _episode_stats(staging, commit, table, episode_index, fps, camera_keys, joint_count, action_count,
                              recovered)

    report = layout.read_json(staging / REPORT_JSON) if (staging / REPORT_JSON).exists() else {}
    warnings = list(episode.get("warnings", []))
    mcap_rel, mcap_kept = _commit_mcap(staging, commit, episode_index, recovered)
    if recovered:
        report, more = _recovered_report(report, n, len(row_grid), mcap_kept)
        warnings += more
    duration_s = (kept[-1] + 1) / fps
    row = _episode_row(episode, episode_index, task, n, from_index, duration_s, camera_keys, recovered,
                       int(rows.column(layout.FRAME_TIME_NS)[0].as_py()), mcap_rel, report, warnings, ep_stats)
    meta_dst = commit / layout.episodes_path(episode_index)
    meta_dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row]), meta_dst)
    new_info, new_tasks, new_stats = _write_dataset_meta(commit, meta, task, task_index, episode_index,
                                                         from_index + n, ep_stats)
    _write_marker(staging, commit, {"episode_index": episode_index, "length": n, "mcap_messages": mcap_kept})
    meta.info, meta.tasks, meta.stats = new_info, new_tasks, new_stats
    return CommitResult(episode_index, n, duration_s, tuple(warnings), mcap_rel, report)


def _final_videos(staging: Path, commit: Path, episode_index: int, row_grid: list[int], fps: int,
                  camera_keys: list[str], recovered: bool) -> list[int]:
    """Finalise every camera's video under commit/ and return the grid indices every stream holds.

    Streams may end at different frames (a kill stops them mid-write): all are cut to the common end.
    Anything but a common prefix (a gap inside the episode) is Unrecoverable.
    """
    videos: dict[str, FinalVideo] = {}
    for key in camera_keys:
        src = staging / video_file(key)
        dst = commit / layout.video_path(episode_index, f"observation.images.{key}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not src.exists():
            raise Unrecoverable(f"camera {key}: no video file")
        try:
            videos[key] = finalize_video(src, dst, fps, verify=recovered)
        except RecordingError as err:
            raise Unrecoverable(f"camera {key}: {err}") from err
    kept_set = set(row_grid)
    for v in videos.values():
        kept_set &= set(v.grid_indices)
    kept = [g for g in row_grid if g in kept_set]
    if not kept:
        raise Unrecoverable("no frame is present in the table and in every camera's video")
    if not _is_prefix(kept, row_grid):
        raise Unrecoverable("frame table and videos disagree inside the episode (not just at its end)")
    for key, v in videos.items():
        if not _is_prefix(kept, v.grid_indices):
            raise Unrecoverable(f"camera {key}: video frames disagree with the frame table")
        if v.frames > len(kept):  # this camera got further than the others: cut it to the common end
            dst = commit / layout.video_path(episode_index, f"observation.images.{key}")
            finalize_video(staging / video_file(key), dst, fps, max_grid_index=kept[-1], verify=recovered)
    return kept


def _write_frame_table(commit: Path, rows: pa.Table, schema: pa.Schema, kept: list[int], episode_index: int,
                       task_index: int, from_index: int, fps: int) -> pa.Table:
    """The episode's LeRobot frame table (dataset indices assigned now), written under commit/."""
    n = len(kept)
    grid = np.asarray(kept, np.int64)
    frame_index = np.arange(n, dtype=np.int64)
    timestamp = (grid / fps).astype(np.float32)
    columns = {
        layout.STATE: rows.column(layout.STATE),
        layout.ACTION: rows.column(layout.ACTION),
        "timestamp": pa.array(timestamp, pa.float32()),
        "frame_index": pa.array(frame_index),
        "episode_index": pa.array(np.full(n, episode_index, np.int64)),
        "index": pa.array(from_index + frame_index),
        "task_index": pa.array(np.full(n, task_index, np.int64)),
    }
    for name in schema.names:
        if name not in columns and name != "grid_index":
            columns[name] = rows.column(name)
    table = pa.table(columns)
    data_dst = commit / layout.data_path(episode_index)
    data_dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, data_dst, row_group_size=max(1, 10 * fps * 60), compression="snappy")
    return table


def _episode_stats(staging: Path, commit: Path, table: pa.Table, episode_index: int, fps: int,
                   camera_keys: list[str], joint_count: int, action_count: int, recovered: bool) -> dict[str, Any]:
    """Per-feature stats of the kept frames; image stats recomputed from the videos after a crash."""
    n = table.num_rows
    ep_stats = {}
    state = np.asarray(table.column(layout.STATE).combine_chunks().flatten()).reshape(n, joint_count)
    action = np.asarray(table.column(layout.ACTION).combine_chunks().flatten()).reshape(n, action_count)
    arrays = {layout.STATE: state, layout.ACTION: action}
    for name in NUMERIC_STATS_FEATURES:
        ep_stats[name] = numeric_stats(arrays[name] if name in arrays else table.column(name).to_numpy())
    for key in camera_keys:
        stats_path = staging / image_stats_file(key)
        image_stats = layout.read_json(stats_path) if stats_path.exists() and not recovered else None
        if image_stats is None:  # recovered: recompute from the kept frames
            acc = ImageStats(every_n_frames=max(1, fps // 4))
            for image, _ in iter_video_frames(commit / layout.video_path(episode_index,
                                                                         f"observation.images.{key}"), fps):
                acc.add(image)
            image_stats = acc.result()
        ep_stats[f"observation.images.{key}"] = image_stats
    return ep_stats


def _episode_row(episode: dict[str, Any], episode_index: int, task: str, n: int, from_index: int,
                 duration_s: float, camera_keys: list[str], recovered: bool, start_time_ns: int, mcap_rel: str,
                 report: dict[str, Any], warnings: list[str], ep_stats: dict[str, Any]) -> dict[str, Any]:
    """The episode's row of meta/episodes (LeRobot v3 columns, then vla_ros's own)."""
    chunk_index, file_index = layout.chunk_file(episode_index)
    row: dict[str, Any] = {
        "episode_index": episode_index,
        "tasks": [task],
        "length": n,
        "meta/episodes/chunk_index": chunk_index,
        "meta/episodes/file_index": file_index,
        "data/chunk_index": chunk_index,
        "data/file_index": file_index,
        "dataset_from_index": from_index,
        "dataset_to_index": from_index + n,
    }
    for key in camera_keys:
        feature = f"observation.images.{key}"
        row[f"videos/{feature}/chunk_index"] = chunk_index
        row[f"videos/{feature}/file_index"] = file_index
        row[f"videos/{feature}/from_timestamp"] = 0.0
        row[f"videos/{feature}/to_timestamp"] = duration_s
    row.update({
        "source": episode["source"],
        "is_success": bool(episode.get("is_success", False)),
        "notes": episode.get("notes", ""),
        "stop_reason": "recovered" if recovered else episode.get("stop_reason", "requested"),
        "recovered": recovered,
        "start_time_ns": start_time_ns,
        "video_codec": episode.get("video_codec", ""),
        "mcap_path": mcap_rel,
        "vla_ros/report": json.dumps({**report, "warnings": warnings}),
    })
    for feature, st in ep_stats.items():
        for stat, value in st.items():
            row[f"stats/{feature}/{stat}"] = value
    return row


def _write_dataset_meta(commit: Path, meta: DatasetMeta, task: str, task_index: int, episode_index: int,
                        total_frames: int, ep_stats: dict[str, Any]) -> tuple[dict, dict[str, int], dict]:
    """info.json, stats.json and (for a new task) tasks.parquet as they are with this episode added."""
    new_tasks = dict(meta.tasks)
    new_tasks.setdefault(task, task_index)
    new_stats = aggregate([meta.stats, ep_stats]) if meta.stats else aggregate([ep_stats])
    new_info = json.loads(json.dumps(meta.info))
    new_info["total_episodes"] = episode_index + 1
    new_info["total_frames"] = total_frames
    new_info["total_tasks"] = len(new_tasks)
    new_info["splits"] = {"train": f"0:{episode_index + 1}"}
    if task not in meta.tasks:
        pq.write_table(tasks_table(new_tasks), commit / layout.TASKS_PATH)
    with open(commit / layout.STATS_PATH, "w") as f:
        json.dump(new_stats, f)
    with open(commit / layout.INFO_PATH, "w") as f:
        json.dump(new_info, f, indent=2)
    return new_info, new_tasks, new_stats


def _write_marker(staging: Path, commit: Path, marker: dict[str, Any]) -> None:
    """fsync every file under commit/ (info.json last: it publishes the episode), then the COMMIT marker."""
    order = [str(p.relative_to(commit)) for p in sorted(commit.rglob("*")) if p.is_file()]
    order.sort(key=lambda rel: rel == layout.INFO_PATH)
    for rel in order:
        fileio.fsync_path(commit / rel)
    for d in {(commit / rel).parent for rel in order}:
        fileio.fsync_path(d)
    tmp = staging / (COMMIT_MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"episode_index": marker["episode_index"], "files": order, "length": marker["length"],
                   "mcap_messages": marker["mcap_messages"]}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, staging / COMMIT_MARKER)
    fileio.fsync_path(staging)


def _commit_mcap(staging: Path, commit: Path, episode_index: int, recovered: bool) -> tuple[str, int | None]:
    """Put the episode's MCAP under commit/; returns (dataset-relative path or '', messages kept or None).

    The staged file is hard-linked (or copied), never moved: until the COMMIT marker exists a crash
    makes the next start rebuild commit/ from staging/, so staging/ must still hold every file.
    """
    src = staging / MCAP_FILE
    if not src.exists():
        return "", None
    rel = layout.mcap_path(episode_index)
    dst = commit / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if recovered:  # possibly cut short: copy what can be read into a complete file
        return rel, salvage_mcap(src, dst)
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)
    return rel, None


def _recovered_report(report: dict[str, Any], kept_frames: int, table_rows: int,
                      mcap_kept: int | None) -> tuple[dict[str, Any], list[str]]:
    """The report of a recovered episode counts what was kept; what the recorder last saw goes under
    report['recovery'] (it is rewritten every second, so it may be behind the files)."""
    report = json.loads(json.dumps(report))
    seen_frames = report.get("frames")
    seen_mcap = report.get("mcap", {}).get("messages")
    report["recovery"] = {"frames_reported": seen_frames, "table_rows": table_rows, "frames_kept": kept_frames,
                          "mcap_messages_reported": seen_mcap, "mcap_messages_kept": mcap_kept}
    report["frames"] = kept_frames
    text = f"recovered after the recorder stopped unexpectedly; {kept_frames} frames kept"
    if table_rows > kept_frames:
        text += f", {table_rows - kept_frames} table rows without video dropped"
    if mcap_kept is not None:
        report.setdefault("mcap", {})["messages"] = mcap_kept
        text += f"; MCAP: {mcap_kept} messages kept"
        if seen_mcap is not None and seen_mcap > mcap_kept:
            text += f" ({seen_mcap} were counted about a second before the stop)"
    elif seen_mcap:
        text += f"; MCAP: the file is missing ({seen_mcap} messages were counted)"
        report.setdefault("mcap", {})["messages"] = 0
    return report, [text]


@dataclasses.dataclass(frozen=True)
class AppliedCommit:
    episode_index: int
    length: int
    mcap_messages: int | None


def apply_commit(root: Path, staging: Path) -> AppliedCommit:
    """Move a committed episode's files into place (idempotent), then remove its staging directory."""
    marker = layout.read_json(staging / COMMIT_MARKER)
    commit = staging / COMMIT_DIR
    for rel in marker["files"]:
        src, dst = commit / rel, root / rel
        if not src.exists():
            continue  # moved before an interruption
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        fileio.fsync_path(dst.parent)
    remove_staging(staging)
    return AppliedCommit(int(marker["episode_index"]), int(marker.get("length", 0)), marker.get("mcap_messages"))


REMOVED_SUFFIX = ".removed"


def remove_staging(staging: Path) -> None:
    """Delete a staging directory all at once as far as recovery can tell.

    shutil.rmtree deletes in directory order: a kill half-way could leave episode.json and
    frames.arrows without COMMIT, which the next start would take for an episode cut short and
    record a second time (or bring back a discarded one). Renaming first is atomic;
    `<name>.removed` directories are only ever deleted.
    """
    doomed = staging.with_name(staging.name + REMOVED_SUFFIX)
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(staging, doomed)
    fileio.fsync_path(staging.parent)
    shutil.rmtree(doomed)


def quarantine(root: Path, staging: Path, reason: str) -> Path:
    """Move a staging directory out of the way with a note saying why; returns where it went."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest_dir = root / layout.QUARANTINE_DIR
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{staging.name}-{stamp}"
    suffix = 1
    while dest.exists():
        dest = dest_dir / f"{staging.name}-{stamp}-{suffix}"
        suffix += 1
    os.replace(staging, dest)
    (dest / "REASON.txt").write_text(reason + "\n")
    fileio.fsync_path(dest_dir)
    return dest
