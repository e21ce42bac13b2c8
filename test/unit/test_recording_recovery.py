"""Crash safety: a recorder killed with SIGKILL mid-episode; the next writer recovers or quarantines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from test.unit.test_recording_writer import (CAMS, FPS, file_digests, make_spec, options, pixel_value, record,
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
