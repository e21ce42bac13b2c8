"""DatasetWriter: records episodes into a LeRobot v3 dataset directory, crash-safe, from any thread.

The recorder node is a set of adapters: each ROS callback converts its message and calls one
`add_*` method with the message's header stamp. The writer samples frames at the dataset's fps
(sampler.py's alignment rule), hands them to one encoder thread per camera and one table thread
through bounded queues (a frame that finds a queue full is dropped and counted, so memory stays
bounded whatever the episode length and a slow disk never blocks a callback), and finalises each
episode atomically (finalize.py). Everything that goes wrong with the input (out-of-order stamps,
gaps, size changes, malformed arrays, queue overflow) is counted into the episode's report in its
metadata; nothing raises into a callback.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from vla_ros import fileio
from vla_ros.errors import RecordingError
from vla_ros.recording import finalize, layout
from vla_ros.recording.finalize import DatasetMeta, Unrecoverable
from vla_ros.recording.mcap_io import McapEpisodeWriter
from vla_ros.recording.sampler import NS_PER_S, FrameSampler, SampledFrame
from vla_ros.config.recorder import RecorderConfig
from vla_ros.recording.spec import EPISODE_SOURCES, DatasetSpec
from vla_ros.recording.video import ImageStats, StreamingVideoWriter
from vla_ros.types import ActionChunk

log = logging.getLogger(__name__)

MB = 1 << 20
STATE_STREAM = "state"
ACTION_STREAM = "action"
CHUNK_STREAM = "chunk"
INTERVENTION_STREAM = "intervention"
_MAX_SIZE_CHANGES_LISTED = 100  # a camera flickering between sizes must not bloat the metadata
_MCAP_QUEUE_MESSAGES = 4096
_MCAP_QUEUE_BYTES = 256 * MB  # raw images are ~1 MB each: bound the bytes, not just the count
MCAP_FLUSH_PERIOD_S = 1.0  # longest a written MCAP message waits in an open chunk (what a kill -9 loses)


def image_stream(camera_key: str) -> str:
    return f"image.{camera_key}"


def _disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclasses.dataclass(frozen=True)
class FrameRow:
    """One frame of the staging table, as the sampler aligned it (finalize.staging_frames_schema)."""

    grid_index: int
    time_ns: int
    state: np.ndarray  # (J,)
    action: np.ndarray  # (A,) the command sent at this frame
    state_stamp_ns: int  # provenance: stamp of the state sample used
    action_stamp_ns: int
    chunk_stamp_ns: int  # -1 without a chunk
    image_stamps_ns: tuple[int, ...]  # one per camera, in camera_keys order
    chunk_id: int  # -1 without a chunk
    chunk_step: int  # index of this frame's action in its chunk, -1 past the chunk's end
    stale_input: bool
    intervention: bool
    source: str


@dataclasses.dataclass(frozen=True)
class EpisodeSummary:
    episode_index: int  # the dataset's episode index if kept; the index it would have had otherwise
    kept: bool
    frame_count: int
    duration_s: float
    path: str  # the episode's frame table (parquet), '' when not kept
    dataset_root: str
    stop_reason: str  # requested | low_disk | shutdown | writer_error | recovered
    recovered: bool
    warnings: tuple[str, ...]
    report: dict[str, Any]  # counts: dropped frames, per-stream out-of-order / late / stale, rejected ...
    mcap_path: str = ""  # absolute, '' when none

    @property
    def message(self) -> str:
        what = (f"episode {self.episode_index}: {self.frame_count} frames ({self.duration_s:.1f} s) kept"
                if self.kept else f"episode {self.episode_index} discarded")
        return "; ".join([what, *self.warnings])


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    staging_dir: str
    outcome: str  # completed (commit replayed) | recovered | quarantined
    episode_index: int | None
    frame_count: int
    detail: str  # warnings or the quarantine reason
    quarantine_dir: str = ""


@dataclasses.dataclass(frozen=True)
class WriterStatus:
    recording: bool
    episode_index: int  # -1 when idle
    task: str
    source: str
    frames_written: int  # frames taken into the episode (handed to the table and encoder threads)
    dropped_frames: int  # frames not taken: a queue was full
    stale_frames: int  # frames written with stale_input (per-stream counts are in the episode report)
    queue_fill: float  # fullest encoder queue, 0..1
    free_disk_mb: float
    errors: tuple[str, ...]
    total_episodes: int


def _finite_vector(values: Any, length: int) -> np.ndarray | None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (length,) or not np.all(np.isfinite(arr)):
        return None
    return arr


class _Episode:
    """One episode being recorded: sampler state, queues, worker threads, counters."""

    def __init__(self, writer: "DatasetWriter", index: int, task: str, task_index: int, source: str,
                 staging: Path) -> None:
        spec, opts = writer.spec, writer.options
        self.writer = writer
        self.index, self.task, self.task_index, self.source = index, task, task_index, source
        self.staging = staging
        self.camera_keys = [c.key for c in spec.cameras]
        cams = [image_stream(k) for k in self.camera_keys]
        self.sampler = FrameSampler(spec.fps, required=[STATE_STREAM, ACTION_STREAM, *cams],
                                    sensors=[STATE_STREAM, *cams], latched=[CHUNK_STREAM, INTERVENTION_STREAM],
                                    max_skew_ns=int(opts.max_skew_s * NS_PER_S),
                                    max_delay_ns=int(opts.max_delay_s * NS_PER_S))
        self.row_queue: queue.Queue = queue.Queue(maxsize=opts.queue_size_frames * 50)
        self.camera_queues: dict[str, queue.Queue] = {k: queue.Queue(maxsize=opts.queue_size_frames)
                                                      for k in self.camera_keys}
        self.mcap_queue: queue.Queue | None = (queue.Queue(maxsize=_MCAP_QUEUE_MESSAGES)
                                               if opts.record_mcap else None)
        self.accepting = True  # guarded by the writer's lock
        self.frames_written = 0
        self.dropped_frames = 0
        self.stale_frames = 0  # written frames with stale_input (one per frame, whatever the streams)
        self.rejected: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.size_changes: list[dict[str, Any]] = []
        self.size_change_count = 0
        self.last_size: dict[str, tuple[int, int]] = {}
        self.resized_frames: dict[str, int] = {}
        self.mcap_messages = 0
        self.mcap_dropped = 0
        self.mcap_queued_bytes = 0  # guarded by the writer's lock
        self.mcap_errors: collections.Counter = collections.Counter()
        self.errors: list[str] = []
        self.stop_reason = "requested"
        self.summary: EpisodeSummary | None = None
        self._finish_lock = threading.Lock()
        self.threads = [threading.Thread(target=self._table_loop, name=f"rec-table-{index}", daemon=True)]
        self.threads += [threading.Thread(target=self._camera_loop, args=(k,), name=f"rec-cam-{k}-{index}",
                                          daemon=True) for k in self.camera_keys]
        if self.mcap_queue is not None:
            self.threads.append(threading.Thread(target=self._mcap_loop, name=f"rec-mcap-{index}", daemon=True))
        for t in self.threads:
            t.start()

    # --- called under the writer's lock -------------------------------------------------------
    def enqueue(self, frames: list[SampledFrame]) -> None:
        for frame in frames:
            room = all(q.qsize() < q.maxsize for q in self.camera_queues.values())
            if not room or self.row_queue.qsize() >= self.row_queue.maxsize:
                self.dropped_frames += 1
                continue
            self.row_queue.put_nowait(self._row(frame))
            for key, q in self.camera_queues.items():
                q.put_nowait((frame.grid_index, frame.samples[image_stream(key)].payload))
            self.frames_written += 1
            self.stale_frames += bool(frame.stale_streams)

    def _row(self, frame: SampledFrame) -> FrameRow:
        s = frame.samples
        chunk = s.get(CHUNK_STREAM)
        chunk_id = chunk_step = chunk_stamp = -1
        if chunk is not None:
            c: ActionChunk = chunk.payload
            chunk_id, chunk_stamp = c.chunk_id, c.stamp_ns
            step = int((frame.time_ns - c.stamp_ns) // max(1, int(c.dt_s * NS_PER_S)))
            chunk_step = step if step < c.horizon else -1
        mark = s.get(INTERVENTION_STREAM)
        intervention = bool(mark.payload) if mark is not None else False
        return FrameRow(grid_index=frame.grid_index, time_ns=frame.time_ns, state=s[STATE_STREAM].payload,
                        action=s[ACTION_STREAM].payload, state_stamp_ns=s[STATE_STREAM].stamp_ns,
                        action_stamp_ns=s[ACTION_STREAM].stamp_ns, chunk_stamp_ns=chunk_stamp,
                        image_stamps_ns=tuple(s[image_stream(k)].stamp_ns for k in self.camera_keys),
                        chunk_id=chunk_id, chunk_step=chunk_step, stale_input=bool(frame.stale_streams),
                        intervention=intervention, source="intervention" if intervention else self.source)

    def report(self) -> dict[str, Any]:
        streams = {name: dataclasses.asdict(c) for name, c in self.sampler.counts.items()}
        return {
            "frames": self.frames_written,
            "dropped_frames": self.dropped_frames,
            "stale_frames": self.stale_frames,
            "streams": streams,
            "rejected": {k: dict(v) for k, v in self.rejected.items()},
            "image_size_changes": list(self.size_changes),
            "image_size_change_count": self.size_change_count,
            "resized_frames": dict(self.resized_frames),
            "mcap": {"messages": self.mcap_messages, "dropped": self.mcap_dropped, "errors": dict(self.mcap_errors)},
            "errors": list(self.errors),
            "t0_ns": self.sampler.t0_ns,
        }

    # --- worker threads ------------------------------------------------------------------------
    def _fail(self, what: str, err: BaseException) -> None:
        msg = f"{what}: {type(err).__name__}: {err}"
        log.error("episode %d: %s; the episode stops taking frames", self.index, msg)
        with self.writer._lock:
            self.errors.append(msg)
            self.accepting = False
            self.stop_reason = "writer_error"

    def _write_report(self) -> None:
        with self.writer._lock:
            report = self.report()
        fileio.write_json_atomic(self.staging / finalize.REPORT_JSON, report)

    def _table_loop(self) -> None:
        spec = self.writer.spec
        schema = finalize.staging_frames_schema(len(spec.joint_names), len(spec.action_names), self.camera_keys)
        rows: list[FrameRow] = []
        last_flush = time.monotonic()
        sink = None
        try:
            sink = open(self.staging / finalize.FRAMES_FILE, "wb")
            stream = ipc.new_stream(sink, schema)
            done = False
            while not done:
                try:
                    item = self.row_queue.get(timeout=1.0)
                    if item is None:
                        done = True
                    else:
                        rows.append(item)
                except queue.Empty:
                    pass
                # One record batch per second of frames: a crash loses at most that much of the table.
                if done or len(rows) >= spec.fps or time.monotonic() - last_flush >= 1.0:
                    if rows:
                        stream.write_batch(self._batch(rows, schema))
                        sink.flush()
                        rows = []
                    last_flush = time.monotonic()
                    if not done:
                        self._write_report()
                        self.writer._check_disk(self)
            stream.close()
        except Exception as err:  # disk full, I/O error: keep what is on disk, stop the episode
            self._fail("frame table", err)
            while self.row_queue.get() is not None:
                pass
        finally:
            if sink is not None:
                sink.close()

    def _batch(self, rows: list[FrameRow], schema: pa.Schema) -> pa.RecordBatch:
        """Rows -> one record batch in finalize.staging_frames_schema's column order."""
        n = len(rows)
        state = np.concatenate([r.state for r in rows]).astype(np.float32)  # (n * J,)
        action = np.concatenate([r.action for r in rows]).astype(np.float32)  # (n * A,)

        def ints(field: str) -> pa.Array:
            return pa.array([getattr(r, field) for r in rows], pa.int64())

        arrays = [
            ints("grid_index"), ints("time_ns"),
            pa.FixedSizeListArray.from_arrays(pa.array(state), len(state) // n),
            pa.FixedSizeListArray.from_arrays(pa.array(action), len(action) // n),
            ints("state_stamp_ns"), ints("action_stamp_ns"), ints("chunk_stamp_ns"),
            *[pa.array([r.image_stamps_ns[i] for r in rows], pa.int64()) for i in range(len(self.camera_keys))],
            ints("chunk_id"), ints("chunk_step"),
            pa.array([r.stale_input for r in rows], pa.bool_()), pa.array([r.intervention for r in rows], pa.bool_()),
            pa.array([r.source for r in rows], pa.string()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _camera_loop(self, key: str) -> None:
        spec, opts = self.writer.spec, self.writer.options
        cam = spec.camera(key)
        q = self.camera_queues[key]
        stats = ImageStats(every_n_frames=max(1, spec.fps // 4))
        video = None
        closed = False
        try:
            video = StreamingVideoWriter(self.staging / finalize.video_file(key), spec.fps, cam.height_px,
                                         cam.width_px, opts.video)
            while (item := q.get()) is not None:
                grid_index, image = item
                video.write(grid_index, image)
                stats.add(image)
            closed = True
            video.close()
            result = stats.result()
            if result is not None:
                fileio.write_json_atomic(self.staging / finalize.image_stats_file(key), result)
        except Exception as err:
            self._fail(f"camera {key} encoder", err)
            while q.get() is not None:
                pass
        finally:
            if video is not None and not closed:
                try:
                    video.close()
                except Exception:  # the error that brought us here is already recorded
                    pass
            with self.writer._lock:
                self.resized_frames[key] = video.resized_frames if video is not None else 0

    def _mcap_loop(self) -> None:
        assert self.mcap_queue is not None
        mcap = None
        last_flush = time.monotonic()
        unflushed = 0
        try:
            mcap = McapEpisodeWriter(self.staging / finalize.MCAP_FILE, self.writer.mcap_search_prefixes)
            while True:
                try:
                    item = self.mcap_queue.get(timeout=MCAP_FLUSH_PERIOD_S / 4)
                except queue.Empty:
                    item = ()  # nothing new: only check whether the open chunk is due
                if item is None:
                    break
                if item:
                    topic, type_name, data, log_time_ns = item
                    with self.writer._lock:
                        self.mcap_queued_bytes -= len(data)
                    try:
                        mcap.write(topic, type_name, data, log_time_ns)
                        self.mcap_messages += 1
                        unflushed += 1
                    except RecordingError as err:
                        if not self.mcap_errors[topic]:
                            log.warning("episode %d: MCAP skips %s: %s", self.index, topic, err)
                        self.mcap_errors[topic] += 1
                # Chunks close by time, not only by size: a 10 Hz topic alone would fill a 1 MB
                # chunk in minutes, all of which a kill -9 would lose.
                if unflushed and time.monotonic() - last_flush >= MCAP_FLUSH_PERIOD_S:
                    mcap.flush()
                    unflushed = 0
                    last_flush = time.monotonic()
            mcap.close()
            mcap = None
        except Exception as err:
            self._fail("MCAP writer", err)
            while self.mcap_queue.get() is not None:
                pass
        finally:
            if mcap is not None:
                try:
                    mcap.close()
                except Exception:
                    pass

    # --- end of the episode --------------------------------------------------------------------
    def finish(self, keep: bool, is_success: bool, notes: str, reason: str | None) -> EpisodeSummary:
        with self._finish_lock:
            if self.summary is not None:
                return self.summary
            with self.writer._lock:
                self.accepting = False
                if reason is not None and self.stop_reason == "requested":
                    self.stop_reason = reason
            for q in self.camera_queues.values():
                q.put(None)
            self.row_queue.put(None)
            if self.mcap_queue is not None:
                self.mcap_queue.put(None)
            for t in self.threads:
                t.join()
            self.summary = self.writer._finalise(self, keep, is_success, notes)
            return self.summary


class DatasetWriter:
    """Records episodes into `root`; recovers or quarantines crashed episodes when constructed.

    Thread-safe: add_* may be called from any number of callback threads; start/stop from a service.
    """

    def __init__(self, root: str | Path, spec: DatasetSpec, options: RecorderConfig | None = None, *,
                 disk_free_bytes: Callable[[Path], int] = _disk_free_bytes,
                 mcap_search_prefixes: list[Path] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.spec = spec
        self.options = options or RecorderConfig()  # its writer fields: skew, delay, queue, disk, MCAP, video
        self.mcap_search_prefixes = mcap_search_prefixes
        self._disk_free_bytes = disk_free_bytes
        self._lock = threading.RLock()
        self._episode: _Episode | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        info_path = self.root / layout.INFO_PATH
        if info_path.exists():
            try:
                meta = DatasetMeta.load(self.root)
            except (ValueError, OSError) as err:  # JSON or Parquet that cannot be read
                raise RecordingError(f"dataset {self.root}: metadata cannot be read ({err}); run "
                                     "validate_dataset and repair or move the dataset") from err
            problems = layout.spec_mismatches(meta.info, spec)
            if problems:
                raise RecordingError(f"dataset {self.root} was recorded with another layout: " + "; ".join(problems))
        else:
            fileio.write_json_atomic(info_path, layout.empty_info(spec, self.options.video.codec))
        self._meta = DatasetMeta.load(self.root)
        self.recovery_reports: tuple[RecoveryReport, ...] = tuple(self.recover())

    # --- crash recovery --------------------------------------------------------------------------
    def recover(self) -> list[RecoveryReport]:
        """Complete, recover or quarantine every staging directory left by an earlier run."""
        if self.recording:
            raise RecordingError("recover: an episode is being recorded; recovery runs only between episodes")
        staging_root = self.root / layout.STAGING_DIR
        if not staging_root.is_dir():
            return []
        reports = []
        dirs = sorted(p for p in staging_root.iterdir() if p.is_dir())
        for d in [p for p in dirs if p.name.endswith(finalize.REMOVED_SUFFIX)]:
            shutil.rmtree(d)  # applied or discarded; its deletion was cut short
        dirs = [p for p in dirs if not p.name.endswith(finalize.REMOVED_SUFFIX)]
        for d in [p for p in dirs if (p / finalize.COMMIT_MARKER).exists()]:
            applied = finalize.apply_commit(self.root, d)
            mcap = "" if applied.mcap_messages is None else f", {applied.mcap_messages} MCAP messages"
            reports.append(RecoveryReport(str(d), "completed", applied.episode_index, applied.length,
                                          f"commit replayed: {applied.length} frames{mcap}"))
            log.warning("completed the interrupted finalisation of episode %d", applied.episode_index)
        self._meta = DatasetMeta.load(self.root)
        for d in [p for p in dirs if p.exists()]:
            reports.append(self._recover_one(d))
        return reports

    def _recover_one(self, staging: Path) -> RecoveryReport:
        spec = self.spec
        try:
            if not (staging / finalize.EPISODE_JSON).exists():
                raise Unrecoverable("no episode.json: the episode never started writing")
            result = finalize.build_commit(
                staging, self._meta, fps=spec.fps, camera_keys=[c.key for c in spec.cameras],
                joint_count=len(spec.joint_names), action_count=len(spec.action_names), recovered=True)
        except Exception as err:  # whatever is wrong with the leftovers, the recorder must still start
            reason = str(err) if isinstance(err, Unrecoverable) else f"{type(err).__name__}: {err}"
            shutil.rmtree(staging / finalize.COMMIT_DIR, ignore_errors=True)
            self._meta = DatasetMeta.load(self.root)
            dest = finalize.quarantine(self.root, staging, reason)
            log.error("quarantined %s to %s: %s", staging.name, dest, reason)
            return RecoveryReport(str(staging), "quarantined", None, 0, reason, str(dest))
        finalize.apply_commit(self.root, staging)
        log.warning("recovered %s as episode %d with %d frames", staging.name, result.episode_index, result.length)
        return RecoveryReport(str(staging), "recovered", result.episode_index, result.length,
                              "; ".join(result.warnings))

    # --- episode control -----------------------------------------------------------------------
    def start_episode(self, task: str, source: str = "teleop") -> int:
        """Begin recording; returns the episode index it gets if kept. Raises RecordingError if refused."""
        if not task or not task.strip():
            raise RecordingError("start_episode: task must be a non-empty instruction, got an empty string")
        if source not in EPISODE_SOURCES:
            raise RecordingError(f"start_episode: source {source!r} is not one of {list(EPISODE_SOURCES)}")
        with self._lock:
            current = self._episode
            if current is not None and current.summary is None:
                raise RecordingError(f"start_episode: episode {current.index} is still being recorded or "
                                     "finalised; stop it first")
            free_mb = self._disk_free_bytes(self.root) / MB
            if free_mb < self.options.min_free_disk_mb:
                raise RecordingError(f"start_episode: only {free_mb:.0f} MB free on {self.root}; "
                                     f"min_free_disk_mb is {self.options.min_free_disk_mb}")
            index = int(self._meta.info["total_episodes"])
            task_index = self._meta.tasks.get(task, len(self._meta.tasks))
            staging = self.root / layout.STAGING_DIR / f"episode_{index:06d}"
            if staging.exists():  # only left by a failed finalisation of this process; never lose it
                finalize.quarantine(self.root, staging, "staging directory still present at the next start")
            staging.mkdir(parents=True)
            fileio.write_json_atomic(staging / finalize.EPISODE_JSON, {
                "episode_index": index, "task": task, "task_index": task_index, "source": source,
                "start_wall_time_ns": time.time_ns(), "fps": self.spec.fps,
                "video_codec": self.options.video.codec})
            fileio.fsync_path(staging.parent)
            self._episode = _Episode(self, index, task, task_index, source, staging)
            log.info("episode %d started: %r (%s)", index, task, source)
            return index

    def stop_episode(self, keep: bool = True, is_success: bool = False, notes: str = "") -> EpisodeSummary:
        """Finalise (keep) or delete the running episode. An episode the writer already stopped on its
        own (low disk) returns its summary here; keep=False cannot undo it then (see the warning)."""
        with self._lock:
            ep = self._episode
            if ep is None:
                raise RecordingError("stop_episode: no episode is being recorded")
        summary = ep.finish(keep, is_success, notes, None)
        with self._lock:
            if self._episode is ep:
                self._episode = None
        if not keep and summary.kept:
            summary = dataclasses.replace(summary, warnings=summary.warnings + (
                "keep=false ignored: the episode was already finalised when the writer stopped it "
                f"({summary.stop_reason})",))
        return summary

    def close(self) -> EpisodeSummary | None:
        """Finalise a running episode (kept, stop_reason=shutdown); the writer holds nothing open after."""
        with self._lock:
            ep = self._episode
            self._episode = None
        if ep is None:
            return None
        return ep.finish(True, False, "recorder shut down", "shutdown")

    # --- inputs (any thread) -------------------------------------------------------------------
    def _active(self) -> _Episode | None:
        ep = self._episode
        return ep if ep is not None and ep.accepting else None

    def _push(self, stream: str, stamp_ns: int, payload: Any) -> bool:
        ep = self._active()
        if ep is None:
            return False
        accepted_before = ep.sampler.counts[stream].accepted
        ep.enqueue(ep.sampler.push(stream, int(stamp_ns), payload))
        return ep.sampler.counts[stream].accepted > accepted_before

    def add_image(self, camera_key: str, image_rgb: np.ndarray, stamp_ns: int) -> bool:
        """image_rgb: (H_img, W_img, 3) uint8 RGB. The writer keeps a reference: do not modify it after."""
        with self._lock:
            ep = self._active()
            if ep is None:
                return False
            if camera_key not in ep.camera_queues:
                ep.rejected[image_stream(camera_key)]["unknown camera"] += 1
                return False
            if (not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3
                    or image_rgb.shape[2] != 3 or image_rgb.shape[0] < 2 or image_rgb.shape[1] < 2):
                ep.rejected[image_stream(camera_key)]["not an (H, W, 3) uint8 image"] += 1
                return False
            size = (int(image_rgb.shape[0]), int(image_rgb.shape[1]))
            previous = ep.last_size.get(camera_key)
            if previous is not None and previous != size:
                ep.size_change_count += 1
                if len(ep.size_changes) < _MAX_SIZE_CHANGES_LISTED:
                    ep.size_changes.append({"camera": camera_key, "stamp_ns": int(stamp_ns),
                                            "from_px": list(previous), "to_px": list(size)})
            ep.last_size[camera_key] = size
            return self._push(image_stream(camera_key), stamp_ns, image_rgb)

    def add_joint_state(self, positions: Any, stamp_ns: int) -> bool:
        """positions: (J,) in spec.joint_names order."""
        return self._add_vector(STATE_STREAM, positions, len(self.spec.joint_names), stamp_ns)

    def add_command(self, action: Any, stamp_ns: int) -> bool:
        """action: (A,) in spec.action_names order, the command sent to the robot."""
        return self._add_vector(ACTION_STREAM, action, len(self.spec.action_names), stamp_ns)

    def _add_vector(self, stream: str, values: Any, length: int, stamp_ns: int) -> bool:
        with self._lock:
            ep = self._active()
            if ep is None:
                return False
            try:
                vec = _finite_vector(values, length)
            except (TypeError, ValueError):
                vec = None
            if vec is None:
                ep.rejected[stream][f"not {length} finite numbers"] += 1
                return False
            return self._push(stream, stamp_ns, vec)

    def add_chunk(self, chunk: ActionChunk) -> bool:
        with self._lock:
            ep = self._active()
            if ep is None:
                return False
            actions = np.asarray(chunk.actions)
            if (actions.ndim != 2 or actions.shape[0] < 1 or not np.all(np.isfinite(actions))
                    or not chunk.dt_s > 0):
                ep.rejected[CHUNK_STREAM]["malformed chunk"] += 1
                return False
            return self._push(CHUNK_STREAM, chunk.stamp_ns, chunk)

    def mark_intervention(self, active: bool, stamp_ns: int) -> bool:
        """From stamp_ns on, frames are tagged intervention=active (until the next mark)."""
        with self._lock:
            return self._push(INTERVENTION_STREAM, stamp_ns, bool(active))

    def add_raw(self, topic: str, type_name: str, cdr: bytes, log_time_ns: int) -> bool:
        """A serialised message for the episode's MCAP file (type like 'sensor_msgs/msg/Image')."""
        with self._lock:
            ep = self._active()
            if ep is None or ep.mcap_queue is None:
                return False
            data = bytes(cdr)
            if ep.mcap_queue.full() or ep.mcap_queued_bytes + len(data) > _MCAP_QUEUE_BYTES:
                ep.mcap_dropped += 1
                return False
            ep.mcap_queue.put_nowait((topic, type_name, data, int(log_time_ns)))
            ep.mcap_queued_bytes += len(data)
            return True

    def note_rejected(self, stream: str, reason: str) -> None:
        """Count a message the caller could not convert (wrong type, missing joints, bad encoding)."""
        with self._lock:
            ep = self._active()
            if ep is not None:
                ep.rejected[stream][reason] += 1

    # --- state ---------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        ep = self._episode
        return ep is not None and ep.summary is None

    def status(self) -> WriterStatus:
        free_mb = self._disk_free_bytes(self.root) / MB
        with self._lock:
            ep = self._episode
            total = int(self._meta.info["total_episodes"])
            if ep is None or ep.summary is not None:
                return WriterStatus(False, -1, "", "", 0, 0, 0, 0.0, free_mb,
                                    tuple(ep.errors) if ep is not None else (), total)
            fill = max((q.qsize() / q.maxsize for q in ep.camera_queues.values()), default=0.0)
            return WriterStatus(True, ep.index, ep.task, ep.source, ep.frames_written, ep.dropped_frames,
                                ep.stale_frames,
                                fill, free_mb, tuple(ep.errors), total)

    @property
    def total_episodes(self) -> int:
        with self._lock:
            return int(self._meta.info["total_episodes"])

    # --- internals -----------------------------------------------------------------------------
    def _check_disk(self, ep: _Episode) -> None:
        """Called by the table thread about once a second."""
        free = self._disk_free_bytes(self.root)
        if free >= self.options.min_free_disk_mb * MB / 2:
            return
        with self._lock:
            if not ep.accepting:
                return
            ep.accepting = False
            ep.stop_reason = "low_disk"
        log.error("episode %d: only %.0f MB free on %s; stopping and keeping the episode", ep.index,
                  free / MB, self.root)
        threading.Thread(target=ep.finish, args=(True, False, "stopped: low disk space", "low_disk"),
                         name=f"rec-lowdisk-{ep.index}", daemon=True).start()

    def _finalise(self, ep: _Episode, keep: bool, is_success: bool, notes: str) -> EpisodeSummary:
        with self._lock:
            report = ep.report()
        warnings = []
        if ep.dropped_frames:
            warnings.append(f"{ep.dropped_frames} frames dropped (encoders behind)")
        stale = {s: c.stale_frames for s, c in ep.sampler.counts.items() if c.stale_frames}
        if stale:
            warnings.append(f"stale input in frames: {stale}")
        if ep.stop_reason == "low_disk":
            warnings.append("stopped early: low disk space")
        warnings += ep.errors
        episode_json = layout.read_json(ep.staging / finalize.EPISODE_JSON)
        episode_json.update({"is_success": bool(is_success), "notes": notes, "stop_reason": ep.stop_reason,
                             "warnings": warnings})
        fileio.write_json_atomic(ep.staging / finalize.EPISODE_JSON, episode_json)
        fileio.write_json_atomic(ep.staging / finalize.REPORT_JSON, report)

        def summary(kept: bool, frames: int, duration_s: float, more: tuple[str, ...] = (), mcap: str = "",
                    index: int = ep.index) -> EpisodeSummary:
            path = str(self.root / layout.data_path(index)) if kept else ""
            return EpisodeSummary(index, kept, frames, duration_s, path, str(self.root), ep.stop_reason, False,
                                  tuple(warnings) + more, report, str(self.root / mcap) if mcap else "")

        if not keep:
            finalize.remove_staging(ep.staging)
            log.info("episode %d discarded", ep.index)
            return summary(False, 0, 0.0)
        if ep.frames_written == 0:
            finalize.remove_staging(ep.staging)
            missing = [s for s, c in ep.sampler.counts.items() if c.accepted == 0
                       and s not in (CHUNK_STREAM, INTERVENTION_STREAM)]
            why = (f"no frame: stream(s) {missing} delivered no message" if missing
                   else "no frame: the streams never overlapped long enough for one frame")
            return summary(False, 0, 0.0, (why,))
        spec = self.spec
        try:
            result = finalize.build_commit(
                ep.staging, self._meta, fps=spec.fps, camera_keys=ep.camera_keys,
                joint_count=len(spec.joint_names), action_count=len(spec.action_names), recovered=False)
        except Exception as err:  # keep the raw parts for a person to look at
            self._meta = DatasetMeta.load(self.root)
            shutil.rmtree(ep.staging / finalize.COMMIT_DIR, ignore_errors=True)
            dest = finalize.quarantine(self.root, ep.staging, f"finalising failed: {type(err).__name__}: {err}")
            log.error("episode %d could not be finalised (%s); raw parts kept in %s", ep.index, err, dest)
            return summary(False, 0, 0.0, (f"could not be finalised ({err}); raw parts in {dest}",))
        finalize.apply_commit(self.root, ep.staging)
        log.info("episode %d kept: %d frames", result.episode_index, result.length)
        return summary(True, result.length, result.duration_s, mcap=result.mcap_path, index=result.episode_index)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

