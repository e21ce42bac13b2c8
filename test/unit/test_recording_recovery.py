"""Crash safety: a recorder killed with SIGKILL mid-episode; the next writer recovers or quarantines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from test.unit.test_recording_writer import (CAMS, FPS, feed, file_digests, make_spec, options, pixel_value, record,
                                             state_at)
from vla_ros.recording import DatasetWriter, LeRobotDatasetReader, validate_dataset
from vla_ros.recording import finalize
from vla_ros.recording.finalize import DatasetMeta

REPO = Path(__file__).resolve().parents[2]

# The child records n_frames, waits until the encoders and the table have written what they were
# given, then kills itself with SIGKILL: no finally blocks, no atexit, no flushing.
_CHILD = """
import os, signal, sys, time
from pathlib import Path
from test.unit.test_recording_writer import feed, make_spec, options
from vla_ros.recording import DatasetWriter
root, n_frames, stage = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
w = DatasetWriter(root, make_spec(), options())
w.start_episode("crash task", "teleop")
feed(w, n_frames)
while w.status().queue_fill > 0:
    time.sleep(0.01)
time.sleep(1.5)  # the table thread writes its open record batch after one second
if stage == "commit":  # finalise up to the commit point, move one file into place, then die
    import json
    from vla_ros.recording import finalize
    ep = w._episode
    with w._lock:
        ep.accepting = False
    for q in [*ep.camera_queues.values(), ep.row_queue]:
        q.put(None)
    for t in ep.threads:
        t.join()
    spec = w.spec
    finalize.build_commit(ep.staging, w._meta, fps=spec.fps, camera_keys=[c.key for c in spec.cameras],
                          joint_count=len(spec.joint_names), action_count=len(spec.action_names), recovered=False)
    first = json.loads((ep.staging / finalize.COMMIT_MARKER).read_text())["files"][0]
    (root / first).parent.mkdir(parents=True, exist_ok=True)
    os.replace(ep.staging / finalize.COMMIT_DIR / first, root / first)
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_recorder(root: Path, n_frames: int, stage: str = "recording") -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), str(root), str(n_frames), stage],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout


def test_kill_mid_episode_is_recovered_and_earlier_episodes_stay_intact(tmp_path):
    record(tmp_path, 12, task="before the crash")
    before = file_digests(tmp_path, 0)
    crash_recorder(tmp_path, 35)
    staging = tmp_path / ".staging" / "episode_000001"
    assert (staging / "frames.arrows").exists()  # what a crash leaves: nothing finalised yet
    assert any(".staging holds ['episode_000001']" in x for x in validate_dataset(tmp_path).warnings)

    w = DatasetWriter(tmp_path, make_spec(), options())
    (rep,) = w.recovery_reports
    assert rep.outcome == "recovered" and rep.episode_index == 1, rep
    # At most the last key-frame interval (1 s = 10 frames) of video and the open table batch are lost.
    assert 10 <= rep.frame_count <= 35
    assert not staging.exists()
    assert file_digests(tmp_path, 0) == before
    report = validate_dataset(tmp_path)
    assert report.ok, str(report)
    assert any("recovered" in x for x in report.warnings)

    r = LeRobotDatasetReader(tmp_path)
    e = r.episodes[1]
    assert e.recovered and e.stop_reason == "recovered" and e.tasks == ("crash task",)
    assert r.tasks == {0: "before the crash", 1: "crash task"}
    table = r.episode_table(1)
    n = rep.frame_count
    np.testing.assert_array_equal(table["frame_index"], np.arange(n))
    np.testing.assert_array_equal(table["action"][:, 0], np.arange(n, dtype=np.float32))
    np.testing.assert_allclose(table["observation.state"],
                               np.stack([state_at(t) for t in table["frame_time_ns"]]).astype(np.float32))
    for c, key in enumerate(CAMS):
        video = r.episode_video(1, f"observation.images.{key}")
        assert len(video) == n
        np.testing.assert_allclose(video.reshape(n, -1).mean(axis=1), [pixel_value(c, i) for i in range(n)], atol=4)
    assert e.report["streams"]["state"]["accepted"] > 0  # counters written while recording survive

    # The dataset goes on: the next episode gets the next index.
    assert w.start_episode("after", "teleop") == 2
    w.stop_episode(keep=False)


def test_unreadable_leftovers_are_quarantined_with_a_reason(tmp_path):
    record(tmp_path, 8)
    before = file_digests(tmp_path, 0)
    staging = tmp_path / ".staging" / "episode_000001"
    staging.mkdir(parents=True)
    (staging / "episode.json").write_text(json.dumps({"episode_index": 1, "task": "x", "source": "teleop"}))
    (staging / "frames.arrows").write_bytes(b"\x00garbage, not an arrow stream")
    orphan = tmp_path / ".staging" / "episode_000002"
    orphan.mkdir()  # killed before it wrote anything

    w = DatasetWriter(tmp_path, make_spec(), options())
    outcomes = sorted((Path(r.staging_dir).name, r.outcome) for r in w.recovery_reports)
    assert outcomes == [("episode_000001", "quarantined"), ("episode_000002", "quarantined")]
    quarantined = {Path(r.staging_dir).name: Path(r.quarantine_dir) for r in w.recovery_reports}
    reason = (quarantined["episode_000001"] / "REASON.txt").read_text()
    assert "no complete frame row" in reason
    assert "never started" in (quarantined["episode_000002"] / "REASON.txt").read_text()
    assert (quarantined["episode_000001"] / "frames.arrows").exists()  # raw parts kept for a person
    assert file_digests(tmp_path, 0) == before and w.total_episodes == 1
    assert validate_dataset(tmp_path).ok


def test_kill_while_moving_files_into_place_is_completed(tmp_path):
    record(tmp_path, 8)
    before = file_digests(tmp_path, 0)
    crash_recorder(tmp_path, 25, stage="commit")
    staging = tmp_path / ".staging" / "episode_000001"
    assert (staging / finalize.COMMIT_MARKER).exists()
    assert DatasetMeta.load(tmp_path).info["total_episodes"] == 1  # info.json not yet replaced

    w = DatasetWriter(tmp_path, make_spec(), options())
    (rep,) = w.recovery_reports
    assert rep.outcome == "completed" and rep.episode_index == 1
    assert not staging.exists() and w.total_episodes == 2
    assert file_digests(tmp_path, 0) == before
    report = validate_dataset(tmp_path)
    assert report.ok and not report.warnings, str(report)
    r = LeRobotDatasetReader(tmp_path)
    assert not r.episodes[1].recovered and r.episodes[1].length >= 10
    assert len(r.episode_video(1, "observation.images.front")) == r.episodes[1].length
    assert FPS == r.fps


# The child records an episode whose only MCAP topic is a 20 Hz joint state, in real time, and
# kills itself with SIGKILL 1.5 s after the last message: about one MCAP flush period later.
_LOW_RATE_CHILD = """
import os, signal, sys, time
from pathlib import Path
from test.unit.test_recording_mcap import joint_state
from test.unit.test_recording_writer import BASE_NS, NS, feed, make_spec, options
from vla_ros.recording import DatasetWriter
root = Path(sys.argv[1])
w = DatasetWriter(root, make_spec(), options(record_mcap=True))
w.start_episode("slow topic", "teleop")
feed(w, 15)
for i in range(40):
    assert w.add_raw("/joint_states", "sensor_msgs/msg/JointState", joint_state(i), BASE_NS + i * NS // 20)
    time.sleep(0.05)
time.sleep(1.5)
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_keeps_the_mcap_of_a_low_rate_topic(tmp_path):
    """Bug it catches: MCAP chunks closed only when 1 MB full, so with joint states alone a kill -9
    after seconds of recording kept 0 messages; and the recovered report still counted them."""
    pytest.importorskip("rclpy.serialization")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_LOW_RATE_CHILD), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "ready" in proc.stdout, proc.stderr

    w = DatasetWriter(tmp_path, make_spec(), options(record_mcap=True))
    (rep,) = w.recovery_reports
    assert rep.outcome == "recovered", rep
    assert "MCAP: 40 messages kept" in rep.detail
    e = LeRobotDatasetReader(tmp_path).episodes[0]
    assert e.report["mcap"]["messages"] == 40 and e.report["recovery"]["mcap_messages_kept"] == 40
    assert e.report["frames"] == e.length == rep.frame_count
    from test.unit.test_recording_mcap import read_mcap
    counts, _ = read_mcap(tmp_path / e.row["mcap_path"])
    assert counts == {"/joint_states": 40}


def _staged_episode(root: Path) -> tuple[DatasetWriter, object, int, int]:
    """An episode with MCAP whose writer threads have finished: finalisation is all that is left."""
    from test.unit.test_recording_mcap import joint_state
    w = DatasetWriter(root, make_spec(), options(record_mcap=True))
    w.start_episode("finalise me", "teleop")
    feed(w, 22)
    for i in range(30):
        w.add_raw("/joint_states", "sensor_msgs/msg/JointState", joint_state(i), 5 * 10**9 + i)
    ep = w._episode
    with w._lock:
        ep.accepting = False
    for q in [*ep.camera_queues.values(), ep.row_queue, ep.mcap_queue]:
        q.put(None)
    for t in ep.threads:
        t.join()
    return w, ep, ep.frames_written, ep.mcap_messages


_TRACED = ("vla_ros/recording/", "vla_ros/fileio.py", "/shutil.py")


def _finalise_in_child(w, ep, root: Path, kill_at: int | None, count_file: Path | None) -> None:
    """Forked child: finalise a copy of the episode, SIGKILLed at the kill_at-th traced line."""
    w.root, ep.staging = root, root / ".staging" / ep.staging.name
    w._meta = DatasetMeta.load(root)
    lines = 0

    def tracer(frame, event, arg):
        nonlocal lines
        if event == "line" and any(t in frame.f_code.co_filename for t in _TRACED):
            lines += 1
            if lines == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer

    sys.settrace(tracer)
    try:
        w._finalise(ep, True, True, "done")
    finally:
        sys.settrace(None)
        if count_file is not None:
            count_file.write_text(str(lines))
        os._exit(0)


def _run_child(*args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _finalise_in_child(*args)
        finally:
            os._exit(3)
    return os.waitpid(pid, 0)[1]


def test_kill_at_any_point_of_finalisation_loses_nothing(tmp_path):
    """Bug it catches: finalisation moved the MCAP into staging/commit/ before the COMMIT marker, and
    recovery deletes an unmarked commit/: a kill -9 in that window lost the MCAP (and the report
    still counted its messages); rmtree of an applied staging directory cut short left parts that
    recovery would record a second time. Here the finalisation of one staged episode is killed for
    real (SIGKILL) at lines spread over all of it, and every copy must recover in full."""
    pytest.importorskip("rclpy.serialization")
    from test.unit.test_recording_mcap import read_mcap
    base = tmp_path / "base"
    record(base, 8, task="before")
    before = file_digests(base, 0)
    w, ep, frames, messages = _staged_episode(base)
    assert frames >= 20 and messages == 30

    count_file = tmp_path / "lines"
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    assert _run_child(w, ep, probe, None, count_file) == 0
    total = int(count_file.read_text())
    assert total > 100
    points = sorted({*range(1, total, max(1, total // 12)), total - 1, total - 5, total - 12})
    success = []
    for k in points:
        root = tmp_path / f"kill_{k}"
        shutil.copytree(base, root)
        status = _run_child(w, ep, root, k, None)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (k, status)
        w2 = DatasetWriter(root, make_spec(), options(record_mcap=True))
        outcomes = [r.outcome for r in w2.recovery_reports]
        assert outcomes in ([], ["completed"], ["recovered"]), (k, w2.recovery_reports)
        if outcomes == []:  # killed while deleting the applied staging directory
            assert not list((root / ".staging").iterdir())
        r = LeRobotDatasetReader(root)
        assert r.num_episodes == 2, (k, outcomes)
        e = r.episodes[1]
        assert e.length == frames, (k, outcomes, e.length)
        success.append(e.is_success)
        np.testing.assert_array_equal(r.episode_table(1)["action"][:, 0], np.arange(frames, dtype=np.float32))
        for key in CAMS:
            assert len(r.episode_video(1, f"observation.images.{key}")) == frames, (k, key)
        assert read_mcap(root / e.row["mcap_path"])[0] == {"/joint_states": messages}, (k, outcomes)
        assert e.report["mcap"]["messages"] == messages
        assert file_digests(root, 0) == before
        assert not (root / "quarantine").exists() and not list((root / ".staging").iterdir())
        assert validate_dataset(root).ok, (k, str(validate_dataset(root)))
        shutil.rmtree(root)
    # is_success is written first thing at the stop; a kill before that is a kill while recording.
    assert success == sorted(success) and success[-1], success
