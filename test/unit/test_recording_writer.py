"""DatasetWriter + LeRobotDatasetReader on real files: round trip, discard, counting, disk space."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from test.conftest import wait_for
from vla_ros.errors import RecordingError
from vla_ros.config.recorder import RecorderConfig
from vla_ros.recording import CameraSpec, DatasetSpec, DatasetWriter, LeRobotDatasetReader, validate_dataset
from vla_ros.recording.validate import INFO_SCHEMA, check_schema
from vla_ros.types import ActionChunk

NS = 1_000_000_000
BASE_NS = 5 * NS  # first stamp of every synthetic episode
JOINTS = ("j1", "j2", "j3")
CAMS = {"front": (48, 64), "wrist": (32, 48)}
FPS = 10


def make_spec(cams: dict[str, tuple[int, int]] = CAMS, fps: int = FPS) -> DatasetSpec:
    return DatasetSpec("test_arm", fps, JOINTS, JOINTS, tuple(CameraSpec(k, h, w) for k, (h, w) in cams.items()))


def options(**kw) -> RecorderConfig:
    kw.setdefault("min_free_disk_mb", 0)
    return RecorderConfig(**kw)


def pixel_value(camera_index: int, frame: int) -> int:
    return 20 + (frame * 9 + camera_index * 60) % 200


def image(camera_index: int, frame: int, h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), pixel_value(camera_index, frame), np.uint8)


def state_at(stamp_ns: int) -> np.ndarray:
    """Joint values encode their own stamp, so a row shows which message fed it."""
    t = (stamp_ns - BASE_NS) / NS
    return np.array([t, t + 1.0, -t])


def feed(writer: DatasetWriter, n_frames: int, *, fps: int = FPS, cams: dict = CAMS, joint_hz: int = 100,
         first: int = 0) -> list[int]:
    """Publish n_frames camera frames at fps, joint states at joint_hz and one command per frame."""
    stamps = []
    for i in range(first, first + n_frames):
        t = BASE_NS + i * NS // fps
        stamps.append(t)
        for c, (key, (h, w)) in enumerate(cams.items()):
            writer.add_image(key, image(c, i, h, w), t)
        for j in range(joint_hz // fps):
            ts = t + j * NS // joint_hz
            writer.add_joint_state(state_at(ts), ts)
        writer.add_command(np.full(len(JOINTS), float(i)), t)
    return stamps


def file_digests(root: Path, episode: int) -> dict[str, str]:
    """Hash of every finalised file of an episode (data, videos, metadata row)."""
    name = f"file-{episode:03d}"
    files = [p for p in root.rglob(f"{name}.*") if ".staging" not in p.parts]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def record(root: Path, n_frames: int = 20, task: str = "pick the cube", **kw) -> None:
    with DatasetWriter(root, make_spec(), options()) as w:
        w.start_episode(task, "teleop")
        feed(w, n_frames, **kw)
        summary = w.stop_episode(keep=True, is_success=True)
        assert summary.kept


def test_round_trip_frames_timestamps_values_and_video(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    assert w.start_episode("pick the cube", "teleop") == 0
    stamps = feed(w, 25)
    s = w.stop_episode(keep=True, is_success=True, notes="first try")
    assert s.kept and s.episode_index == 0 and not s.recovered
    # Frames are decided once every stream has passed them: the last image's frame is the last one.
    assert s.frame_count == 25 and s.report["dropped_frames"] == 0 and s.warnings == ()
    assert s.message == "episode 0: 25 frames (2.5 s) kept"
    assert Path(s.path).exists() and not (tmp_path / ".staging" / "episode_000000").exists()

    report = validate_dataset(tmp_path)
    assert report.ok, str(report)
    r = LeRobotDatasetReader(tmp_path)
    assert len(r) == 25 and r.num_episodes == 1 and r.episode_bounds(0) == (0, 25)
    assert r.tasks == {0: "pick the cube"}
    e = r.episodes[0]
    assert e.is_success and e.source == "teleop" and e.row["notes"] == "first try"
    table = r.episode_table(0)
    np.testing.assert_array_equal(table["frame_index"], np.arange(25))
    np.testing.assert_allclose(table["timestamp"], np.arange(25) / FPS, atol=1e-6)
    np.testing.assert_array_equal(table["frame_time_ns"], stamps)
    # Provenance: each frame's image is the one stamped at its frame time; state the newest <= it.
    np.testing.assert_array_equal(table["provenance.images.front.stamp_ns"], stamps)
    np.testing.assert_array_equal(table["provenance.state.stamp_ns"], stamps)
    np.testing.assert_allclose(table["observation.state"],
                               np.stack([state_at(t) for t in stamps]).astype(np.float32))
    np.testing.assert_array_equal(table["action"][:, 0], np.arange(25, dtype=np.float32))
    assert not table["stale_input"].any() and set(table["source"]) == {"teleop"}

    for c, (key, (h, w_px)) in enumerate(CAMS.items()):
        video = r.episode_video(0, f"observation.images.{key}")
        assert video.shape == (25, h, w_px, 3) and video.dtype == np.uint8
        expected = np.array([pixel_value(c, i) for i in range(25)], float)
        np.testing.assert_allclose(video.reshape(25, -1).mean(axis=1), expected, atol=4.0)
    streamed = list(r.iter_episode_video(0, "observation.images.wrist"))
    np.testing.assert_array_equal(np.stack(streamed), r.episode_video(0, "observation.images.wrist"))
    frame = r[7]
    assert frame["task"] == "pick the cube" and frame["frame_index"] == 7
    assert frame["observation.images.front"].shape == (48, 64, 3)
    assert abs(float(frame["observation.images.front"].mean()) - pixel_value(0, 7)) < 4.0

    stats = r.stats
    assert stats["observation.state"]["count"] == [25]
    np.testing.assert_allclose(stats["action"]["max"], [24.0] * 3)
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)


def test_discard_leaves_nothing_behind(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    w.start_episode("wave", "teleop")
    feed(w, 10)
    s = w.stop_episode(keep=False)
    assert not s.kept and s.path == ""
    assert list((tmp_path / ".staging").iterdir()) == []
    assert not (tmp_path / "data").exists() and not (tmp_path / "videos").exists()
    assert w.total_episodes == 0
    assert validate_dataset(tmp_path).ok
    # The index is not consumed: the next kept episode is 0.
    assert w.start_episode("wave", "teleop") == 0
    feed(w, 5)
    assert w.stop_episode().episode_index == 0


def test_two_episodes_both_intact_with_contiguous_indices(tmp_path):
    record(tmp_path, 12, task="pick")
    first = file_digests(tmp_path, 0)
    assert len(first) == 4  # data, two videos, episode metadata
    with DatasetWriter(tmp_path, make_spec(), options()) as w:  # a new writer appends
        assert w.start_episode("place", "policy") == 1
        feed(w, 15)
        assert w.stop_episode().frame_count == 15
    assert file_digests(tmp_path, 0) == first
    assert validate_dataset(tmp_path).ok
    r = LeRobotDatasetReader(tmp_path)
    assert len(r) == 27 and r.episode_bounds(1) == (12, 27) and r.episode_of(12) == 1
    assert r.tasks == {0: "pick", 1: "place"}
    assert r[12]["index"] == 12 and r[12]["frame_index"] == 0 and r[12]["task"] == "place"
    assert r.stats["observation.state"]["count"] == [27]
    assert r.info["total_episodes"] == 2 and r.info["splits"] == {"train": "0:2"}


def test_same_task_reuses_its_index(tmp_path):
    record(tmp_path, 5, task="pick")
    record(tmp_path, 5, task="pick")
    r = LeRobotDatasetReader(tmp_path)
    assert r.tasks == {0: "pick"} and r.info["total_tasks"] == 1
    assert set(r.episode_table(1)["task_index"]) == {0}


def test_reopening_with_another_layout_is_refused(tmp_path):
    record(tmp_path, 5)
    with pytest.raises(RecordingError, match="fps is 10 on disk, 15 requested"):
        DatasetWriter(tmp_path, make_spec(fps=15), options())
    with pytest.raises(RecordingError, match="cameras"):
        DatasetWriter(tmp_path, make_spec(cams={"front": (48, 64)}), options())


def test_out_of_order_duplicate_and_malformed_inputs_are_counted(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    w.start_episode("pick", "teleop")
    feed(w, 10)
    t = BASE_NS + 5 * NS // FPS
    assert not w.add_joint_state(state_at(t), t)  # older than the newest joint state
    assert not w.add_image("front", image(0, 0, 48, 64), t)  # older than the newest image
    assert not w.add_joint_state([1.0, 2.0], BASE_NS + 10 * NS)  # wrong length
    assert not w.add_joint_state([1.0, float("nan"), 2.0], BASE_NS + 10 * NS)
    assert not w.add_command("not numbers", BASE_NS + 10 * NS)
    assert not w.add_image("front", np.zeros((48, 64, 3), np.float32), BASE_NS + 10 * NS)
    assert not w.add_image("side", image(0, 0, 48, 64), BASE_NS + 10 * NS)
    w.note_rejected("/camera/image_raw", "encoding bgr16 unsupported")
    s = w.stop_episode()
    rep = s.report
    assert rep["streams"]["state"]["out_of_order"] == 1
    assert rep["streams"]["image.front"]["out_of_order"] == 1
    assert rep["rejected"]["state"] == {"not 3 finite numbers": 2}
    assert rep["rejected"]["action"] == {"not 3 finite numbers": 1}
    assert rep["rejected"]["image.front"] == {"not an (H, W, 3) uint8 image": 1}
    assert rep["rejected"]["image.side"] == {"unknown camera": 1}
    assert rep["rejected"]["/camera/image_raw"] == {"encoding bgr16 unsupported": 1}
    assert s.frame_count == 10
    stored = LeRobotDatasetReader(tmp_path).episodes[0].report
    assert stored["streams"]["state"]["out_of_order"] == 1  # the counts live in the episode metadata


def test_resolution_change_is_recorded_and_resized_to_the_dataset_size(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    w.start_episode("pick", "teleop")
    for i in range(12):
        t = BASE_NS + i * NS // FPS
        h, w_px = (48, 64) if i < 6 else (96, 128)  # the front camera switches resolution mid-episode
        w.add_image("front", image(0, i, h, w_px), t)
        w.add_image("wrist", image(1, i, 32, 48), t)
        w.add_joint_state(state_at(t), t)
        w.add_command(np.zeros(3), t)
    s = w.stop_episode()
    assert s.report["image_size_change_count"] == 1
    change = s.report["image_size_changes"][0]
    assert change["camera"] == "front" and change["from_px"] == [48, 64] and change["to_px"] == [96, 128]
    assert s.report["resized_frames"]["front"] == 6
    assert validate_dataset(tmp_path).ok
    video = LeRobotDatasetReader(tmp_path).episode_video(0, "observation.images.front")
    assert video.shape == (12, 48, 64, 3)
    assert abs(video[9].mean() - pixel_value(0, 9)) < 4.0


def test_camera_gap_flags_frames_stale_and_keeps_uniform_timing(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options(max_skew_s=0.15))
    w.start_episode("pick", "teleop")
    for i in range(20):
        t = BASE_NS + i * NS // FPS
        if not 5 <= i < 10:  # the wrist camera is silent for half a second
            w.add_image("wrist", image(1, i, 32, 48), t)
        w.add_image("front", image(0, i, 48, 64), t)
        w.add_joint_state(state_at(t), t)
        w.add_command(np.zeros(3), t)
    s = w.stop_episode()
    assert s.frame_count == 20
    # Frames 5..9 hold the image of t = 0.4 s; older than 0.15 s from frame 6 (0.2 s) on.
    assert s.report["streams"]["image.wrist"]["stale_frames"] == 4
    assert any("stale input" in x for x in s.warnings)
    table = LeRobotDatasetReader(tmp_path).episode_table(0)
    assert table["stale_input"].tolist() == [6 <= i <= 9 for i in range(20)]
    np.testing.assert_allclose(table["timestamp"], np.arange(20) / FPS, atol=1e-6)
    assert validate_dataset(tmp_path).ok


def test_status_stale_frames_counts_frames_not_streams(tmp_path):
    """Bug it catches: the status's stale_frames summed the per-stream counts, so a frame with both
    cameras stale counted twice."""
    w = DatasetWriter(tmp_path, make_spec(), options(max_skew_s=0.15))
    w.start_episode("pick", "teleop")
    for i in range(20):
        t = BASE_NS + i * NS // FPS
        if not 5 <= i < 10:  # both cameras silent for half a second
            w.add_image("wrist", image(1, i, 32, 48), t)
            w.add_image("front", image(0, i, 48, 64), t)
        w.add_joint_state(state_at(t), t)
        w.add_command(np.zeros(3), t)
    status = w.status()
    s = w.stop_episode()
    table = LeRobotDatasetReader(tmp_path).episode_table(0)
    assert int(table["stale_input"].sum()) == 4 == s.report["stale_frames"]
    assert s.report["streams"]["image.wrist"]["stale_frames"] + s.report["streams"]["image.front"]["stale_frames"] == 8
    assert status.stale_frames == 4 and status.frames_written == 20


def test_chunk_and_intervention_columns(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    w.start_episode("pick", "policy")
    chunk = ActionChunk(chunk_id=7, stamp_ns=BASE_NS + 2 * NS // FPS, action_space="joint_position",
                        names=JOINTS, dt_s=0.1, actions=np.zeros((4, 3)))
    for i in range(12):
        t = BASE_NS + i * NS // FPS
        if i == 1:
            assert w.add_chunk(chunk)
        if i == 8:
            assert w.mark_intervention(True, t)
        feed(w, 1, first=i)
    assert not w.add_chunk(ActionChunk(8, BASE_NS + 2 * NS, "joint_position", JOINTS, 0.1,
                                       np.full((4, 3), np.nan)))
    s = w.stop_episode()
    table = LeRobotDatasetReader(tmp_path).episode_table(0)
    assert table["chunk.id"].tolist() == [-1, -1] + [7] * 10
    assert table["chunk.step"].tolist() == [-1, -1, 0, 1, 2, 3] + [-1] * 6  # horizon 4, then expired
    assert table["intervention"].tolist() == [i >= 8 for i in range(12)]
    assert table["source"].tolist() == ["policy"] * 8 + ["intervention"] * 4
    assert s.report["rejected"]["chunk"] == {"malformed chunk": 1}


def test_concurrent_callbacks_from_several_threads(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    w.start_episode("pick", "teleop")
    n = 30
    tick = threading.Barrier(len(CAMS) + 2)  # real streams run side by side: one frame period per tick

    def camera(c: int, key: str, h: int, w_px: int) -> None:
        for i in range(n):
            w.add_image(key, image(c, i, h, w_px), BASE_NS + i * NS // FPS)
            tick.wait()

    def joints() -> None:
        for i in range(n):
            for j in range(10):
                t = BASE_NS + (i * 10 + j) * NS // 100
                w.add_joint_state(state_at(t), t)
            tick.wait()

    def commands() -> None:
        for i in range(n):
            w.add_command(np.full(3, float(i)), BASE_NS + i * NS // FPS)
            tick.wait()

    threads = [threading.Thread(target=camera, args=(c, k, *hw)) for c, (k, hw) in enumerate(CAMS.items())]
    threads += [threading.Thread(target=joints), threading.Thread(target=commands)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = w.stop_episode()
    # Every frame up to the slowest stream's last stamp is decided, whatever the interleaving.
    assert s.frame_count + s.report["dropped_frames"] >= n - 1
    assert validate_dataset(tmp_path).ok
    r = LeRobotDatasetReader(tmp_path)
    table = r.episode_table(0)
    video = r.episode_video(0, "observation.images.front")
    grid = np.rint(table["timestamp"] * FPS).astype(int)
    np.testing.assert_allclose(video.reshape(len(grid), -1).mean(axis=1), [pixel_value(0, k) for k in grid], atol=4)


def test_frames_dropped_on_queue_overflow_keep_video_and_table_aligned(tmp_path):
    big = {"front": (480, 640)}
    spec = make_spec(cams=big)
    w = DatasetWriter(tmp_path, spec, options(queue_size_frames=2))
    w.start_episode("pick", "teleop")
    feed(w, 60, cams=big, joint_hz=10)  # far faster than real time: the encoder falls behind
    s = w.stop_episode()
    assert s.frame_count + s.report["dropped_frames"] == 60
    report = validate_dataset(tmp_path)
    assert report.ok, str(report)
    r = LeRobotDatasetReader(tmp_path)
    table = r.episode_table(0)
    grid = np.rint(table["timestamp"] * FPS).astype(int)
    np.testing.assert_array_equal(table["action"][:, 0], grid)  # row k holds the command of its frame time
    video = r.episode_video(0, "observation.images.front")
    np.testing.assert_allclose(video.reshape(len(grid), -1).mean(axis=1), [pixel_value(0, k) for k in grid], atol=4)
    holes = grid[-1] + 1 - len(grid)  # drops inside the episode (after the last kept frame they leave none)
    assert any(f"{holes} frames missing" in x for x in report.warnings) == (holes > 0)
    assert any("frames dropped" in x for x in s.warnings) == (s.report["dropped_frames"] > 0)


def test_low_disk_refuses_to_start(tmp_path):
    huge = 10 ** 9  # MB: more than any real disk has free
    w = DatasetWriter(tmp_path, make_spec(), options(min_free_disk_mb=huge))
    with pytest.raises(RecordingError, match="min_free_disk_mb is 1000000000"):
        w.start_episode("pick", "teleop")
    assert not w.recording


def test_low_disk_during_an_episode_stops_and_keeps_it(tmp_path):
    free = {"bytes": 10 << 30}
    w = DatasetWriter(tmp_path, make_spec(), options(min_free_disk_mb=1000),
                      disk_free_bytes=lambda _path: free["bytes"])
    w.start_episode("pick", "teleop")
    feed(w, 15)
    free["bytes"] = 100 << 20  # 100 MB left, below half of min_free_disk_mb
    wait_for(lambda: not w.recording, timeout_s=20, what="the writer to stop the episode on low disk")
    assert not w.add_image("front", image(0, 99, 48, 64), BASE_NS + 99 * NS)
    s = w.stop_episode(keep=False)
    assert s.kept and s.stop_reason == "low_disk" and s.frame_count == 15
    assert any("low disk" in x for x in s.warnings) and any("keep=false ignored" in x for x in s.warnings)
    assert validate_dataset(tmp_path).ok
    with pytest.raises(RecordingError, match="only 100 MB free"):
        w.start_episode("pick", "teleop")


def test_start_and_stop_are_refused_in_the_wrong_state(tmp_path):
    w = DatasetWriter(tmp_path, make_spec(), options())
    with pytest.raises(RecordingError, match="no episode is being recorded"):
        w.stop_episode()
    with pytest.raises(RecordingError, match="task must be a non-empty"):
        w.start_episode("  ", "teleop")
    with pytest.raises(RecordingError, match="source 'robot'"):
        w.start_episode("pick", "robot")
    w.start_episode("pick", "teleop")
    with pytest.raises(RecordingError, match="episode 0 is still being recorded"):
        w.start_episode("pick", "teleop")
    assert w.status().recording and w.status().episode_index == 0
    s = w.stop_episode()
    assert not s.kept and "no frame" in s.warnings[-1]  # no message at all: nothing to keep
    assert not w.status().recording


def test_metadata_validates_against_the_schema_and_lerobot_layout(tmp_path):
    record(tmp_path, 8)
    info = (tmp_path / "meta" / "info.json").read_text()
    info = json.loads(info)
    assert check_schema(info, INFO_SCHEMA) == []
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == 8
    assert info["features"]["observation.images.front"]["shape"] == [48, 64, 3]
    for rel in ("meta/tasks.parquet", "meta/stats.json", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", "videos/observation.images.front/chunk-000/file-000.mp4",
                "videos/observation.images.wrist/chunk-000/file-000.mp4"):
        assert (tmp_path / rel).exists(), rel
    ep = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[0]
    assert ep["videos/observation.images.front/from_timestamp"] == 0.0
    assert ep["videos/observation.images.front/to_timestamp"] == pytest.approx(0.8)
    tasks = pq.read_table(tmp_path / "meta/tasks.parquet")
    assert b"pandas" in tasks.schema.metadata  # LeRobot reads task as the DataFrame index
    # A broken info.json is reported, not crashed on.
    info["fps"] = "ten"
    (tmp_path / "meta" / "info.json").write_text(json.dumps(info))
    report = validate_dataset(tmp_path)
    assert not report.ok and any("fps: expected integer" in e for e in report.errors)


@pytest.mark.parametrize("codec", ["mpeg4", "av1"])
def test_other_codecs_round_trip(tmp_path, codec):
    from vla_ros.config.recorder import VideoConfig

    cams = {"front": (64, 64)}
    w = DatasetWriter(tmp_path, make_spec(cams=cams), options(video=VideoConfig(codec=codec, preset="10")))
    w.start_episode("pick", "teleop")
    feed(w, 12, cams=cams)
    assert w.stop_episode().frame_count == 12
    assert validate_dataset(tmp_path).ok
    r = LeRobotDatasetReader(tmp_path)
    assert r.episodes[0].row["video_codec"] == codec
    video = r.episode_video(0, "observation.images.front")
    np.testing.assert_allclose(video.reshape(12, -1).mean(axis=1), [pixel_value(0, i) for i in range(12)], atol=4)
