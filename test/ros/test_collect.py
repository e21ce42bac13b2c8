"""Collection end to end: sim_robot_node + recorder_node + scripted_teleop_node as processes, one scripted
pour demonstration recorded through the recorder's services and read back with the dataset reader."""

from __future__ import annotations

import json

import numpy as np
import psutil

from vla_ros.apps.collect import main as collect_main
from vla_ros.apps.collect import schedule
from vla_ros.recording.reader import LeRobotDatasetReader


def test_schedule_alternates_tasks_with_shared_seeds() -> None:
    assert schedule("both", 2, 7) == [("pour", 7), ("write", 7), ("pour", 8), ("write", 8)]
    assert schedule("write", 2, 0) == [("write", 0), ("write", 1)]


def test_one_scripted_demonstration_is_recorded_like_teleop(tmp_path) -> None:
    dataset, logs = tmp_path / "dataset", tmp_path / "logs"
    code = collect_main(["--task", "pour", "--episodes", "1", "--dataset", str(dataset), "--log-dir", str(logs),
                         "--seed0", "3"])
    assert psutil.Process().children(recursive=True) == [], "node processes were left running"
    summary = json.loads((logs / "collection_summary.json").read_text())
    assert code == 0, summary
    assert summary["episodes_kept"] == 1 and summary["successes"] == 1, summary

    reader = LeRobotDatasetReader(dataset)
    assert reader.num_episodes == 1
    episode = reader.episodes[0]
    assert episode.source == "teleop" and episode.is_success
    assert episode.tasks == ("pour the cup into the bowl",)
    assert episode.length == summary["frames"] > 50  # ~9 s of demonstration at 10 fps
    table = reader.episode_table(0)
    states, actions = np.asarray(table["observation.state"]), np.asarray(table["action"])
    assert states.shape == actions.shape == (episode.length, 7)
    # The commands were recorded as actions: the gripper closes on the cup and the arm travels.
    assert actions[0, -1] < 0.1 and actions[:, -1].max() > 0.6
    assert np.abs(np.diff(states[:, :6], axis=0)).sum() > 1.0
    # The arm follows the commands: state and action stay close (velocity-limited tracking). A percentile,
    # not the max: on a loaded 2-core machine one frame's joint state can lag its command.
    assert np.percentile(np.abs(states[:, :6] - actions[:, :6]).max(axis=1), 95) < 0.5
    frame = reader.get_frame(episode.dataset_from_index + 10)
    assert frame["observation.images.front"].shape == (240, 320, 3)


def test_a_leader_demonstration_goes_through_teleop_and_safety(tmp_path) -> None:
    """Catches `--device leader` commanding the arm around teleop_node and safety_node, or the recorder
    tagging a plain teleop demonstration as an intervention."""
    dataset, logs = tmp_path / "dataset", tmp_path / "logs"
    code = collect_main(["--task", "pour", "--episodes", "1", "--dataset", str(dataset), "--log-dir", str(logs),
                         "--seed0", "3", "--device", "leader"])
    assert psutil.Process().children(recursive=True) == [], "node processes were left running"
    summary = json.loads((logs / "collection_summary.json").read_text())
    assert code == 0 and summary["episodes_kept"] == 1, summary
    assert "engaged (leader)" in (logs / "teleop_node.log").read_text()
    assert "running" in (logs / "safety_node.log").read_text()
    reader = LeRobotDatasetReader(dataset)
    table = reader.episode_table(0)
    assert reader.episodes[0].source == "teleop" and set(table["source"]) == {"teleop"}
    states = np.asarray(table["observation.state"])
    assert np.abs(np.diff(states[:, :6], axis=0)).sum() > 1.0  # the arm travelled
