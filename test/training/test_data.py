"""ChunkDataset on datasets our recorder wrote: samples, chunk padding/masking, statistics, bad episodes."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from test.training.tiny import FPS, IMAGE_HW, JOINTS, TASKS, image, trajectory, write_dataset
from vla_ros.errors import ConfigError, RecordingError
from vla_ros.recording.reader import LeRobotDatasetReader
from vla_ros.training.data import ChunkDataset, collate

FRAMES = 24


def _video(root, episode: int):
    return LeRobotDatasetReader(root).video_path(episode, "observation.images.front")


def _data(root, episode: int):
    return root / f"data/chunk-000/file-{episode:03d}.parquet"


def test_interface_comes_from_the_dataset_metadata(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8)
    interface = dataset.interface
    assert interface.fps == FPS
    assert interface.joint_names == JOINTS and interface.action_names == JOINTS
    assert interface.camera_names == ("front",) and interface.image_size_px == IMAGE_HW
    assert sorted(dataset.tasks) == sorted(TASKS)
    assert len(dataset) == 6 * FRAMES and not dataset.skipped


def test_sample_holds_the_frame_state_task_and_next_actions(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8)
    episode, frame = 2, 5
    sample = dataset[episode * FRAMES + frame]
    positions = trajectory(episode, FRAMES)
    assert sample["frames"].shape == (1, *IMAGE_HW, 3) and sample["frames"].dtype.is_floating_point is False
    # h264 is lossy: the decoded frame is close to what was recorded, and far from another frame's image
    recorded = image(positions[frame], frame).astype(float)
    decoded = sample["frames"][0].numpy().astype(float)
    assert np.abs(decoded - recorded).mean() < 6.0
    assert np.abs(decoded - image(positions[frame + 8], frame + 8)).mean() > 3 * np.abs(decoded - recorded).mean()
    assert sample["instruction"] == TASKS[episode % 2]
    np.testing.assert_allclose(sample["state"].numpy(), positions[frame], atol=1e-6)
    np.testing.assert_allclose(sample["actions"].numpy(), positions[frame + 1: frame + 9], atol=1e-6)
    assert sample["action_mask"].all()


def test_chunk_at_episode_end_is_padded_with_the_last_action_and_masked(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8)
    episode, frame = 1, FRAMES - 3
    sample = dataset[episode * FRAMES + frame]
    positions = trajectory(episode, FRAMES)
    assert sample["action_mask"].tolist() == [True] * 3 + [False] * 5
    expected = np.concatenate([positions[frame + 1: FRAMES + 1], np.repeat(positions[FRAMES][None], 5, axis=0)])
    np.testing.assert_allclose(sample["actions"].numpy(), expected, atol=1e-6)


def test_stride_and_joint_delta_targets(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=4, action_stride_frames=2, action_space="joint_delta")
    sample = dataset[3]  # episode 0, frame 3
    positions = trajectory(0, FRAMES)
    actions = positions[1:]  # action k = position k + 1
    expected = actions[[3, 5, 7, 9]] - positions[3]
    np.testing.assert_allclose(sample["actions"].numpy(), expected, atol=1e-6)


def test_norm_stats_are_the_quantiles_of_actions_and_states(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8)
    stats = dataset.norm_stats()
    actions = np.concatenate([trajectory(e, FRAMES)[1:] for e in range(6)]).astype(np.float32).astype(np.float64)
    states = np.concatenate([trajectory(e, FRAMES)[:-1] for e in range(6)]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(stats.action.q01, np.quantile(actions, 0.01, axis=0))
    np.testing.assert_allclose(stats.action.q99, np.quantile(actions, 0.99, axis=0))
    np.testing.assert_allclose(stats.state.q99, np.quantile(states, 0.99, axis=0))


def test_collate_stacks_a_batch(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8)
    batch = collate([dataset[i] for i in (0, 30, 60)])
    assert batch["frames"].shape == (3, 1, *IMAGE_HW, 3)
    assert batch["actions"].shape == (3, 8, 7) and batch["action_mask"].shape == (3, 8)
    assert batch["state"].shape == (3, 7) and len(batch["instruction"]) == 3


def test_image_size_override_resizes_like_policy_node(recorded_dataset):
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=2, image_size_px=(32, 48))
    assert dataset[0]["frames"].shape == (1, 32, 48, 3)
    assert dataset.interface.image_size_px == (32, 48)


def test_datasets_with_other_joints_are_refused(recorded_dataset, tmp_path):
    other = write_dataset(tmp_path / "other", episodes=1, frames=4)
    info = other / "meta/info.json"
    info.write_text(info.read_text().replace('"joint_1"', '"shoulder"'))
    with pytest.raises(ConfigError, match="joint_names"):
        ChunkDataset([str(recorded_dataset), str(other)], chunk_size=2)


def test_unknown_camera_is_refused(recorded_dataset):
    with pytest.raises(ConfigError, match="wrist"):
        ChunkDataset([str(recorded_dataset)], chunk_size=2, camera_names=("wrist",))


# ---- corrupt and incomplete episodes: skipped with a warning naming them, never fatal ----

def _damage_parquet(root):
    _data(root, 1).write_bytes(b"not a parquet file")
    return 1, "file-001.parquet"


def _delete_video(root):
    path = _video(root, 2)
    path.unlink()
    return 2, str(path)


def _garbage_video(root):
    path = _video(root, 3)
    path.write_bytes(b"\x00garbage" * 100)
    return 3, str(path)


def _drop_rows(root):
    path = _data(root, 4)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, FRAMES - 5), path)
    return 4, "19 rows"


@pytest.mark.parametrize("damage", [_damage_parquet, _delete_video, _garbage_video, _drop_rows],
                         ids=["unreadable-parquet", "missing-video", "undecodable-video", "frame-count-mismatch"])
def test_bad_episode_is_skipped_with_a_warning_naming_it(dataset_copy, caplog, damage):
    episode, detail = damage(dataset_copy)
    with caplog.at_level(logging.WARNING, logger="vla_ros.training.data"):
        dataset = ChunkDataset([str(dataset_copy)], chunk_size=8)
    assert [s.episode_index for s in dataset.skipped] == [episode]
    assert len(dataset) == 5 * FRAMES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"episode {episode} " in w and str(dataset_copy) in w and detail in w for w in warnings), warnings
    assert episode not in {e.episode_index for e in dataset.episodes}
    dataset[0], dataset[len(dataset) - 1]  # the remaining episodes still serve samples


def test_video_that_fails_while_training_is_skipped_from_then_on(dataset_copy, caplog):
    path = _video(dataset_copy, 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact (frame count 24), half the frames gone
    dataset = ChunkDataset([str(dataset_copy)], chunk_size=8)
    assert not dataset.skipped  # nothing visible without decoding
    with caplog.at_level(logging.WARNING, logger="vla_ros.training.data"):
        sample = dataset[2 * FRAMES + 4]
    assert [s.episode_index for s in dataset.skipped] == [2]
    assert any("episode 2 " in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    # served from the next usable episode, same frame
    np.testing.assert_allclose(sample["state"].numpy(), trajectory(3, FRAMES)[4], atol=1e-6)
    assert sample["instruction"] == TASKS[3 % 2]


def test_no_usable_episode_is_an_error(dataset_copy):
    for episode in range(6):
        _data(dataset_copy, episode).write_bytes(b"broken")
    with pytest.raises(RecordingError, match="no usable episode"):
        ChunkDataset([str(dataset_copy)], chunk_size=8)


def test_task_filter_keeps_only_episodes_of_the_named_tasks(recorded_dataset):
    wanted = TASKS[1]
    dataset = ChunkDataset([str(recorded_dataset)], chunk_size=8, task_filter=(wanted[:10],))
    assert dataset.tasks == [wanted] and dataset.filtered_out == 3 and not dataset.skipped
    assert len(dataset) == 3 * FRAMES
    assert {dataset[i]["instruction"] for i in range(0, len(dataset), FRAMES)} == {wanted}
    with pytest.raises(RecordingError, match="of other tasks"):
        ChunkDataset([str(recorded_dataset)], chunk_size=8, task_filter=("no such task",))


def test_success_only_leaves_out_failed_demonstrations(tmp_path):
    """Catches success_only being ignored: the failed demonstrations (the expert dropped the cup) would be
    imitated like the good ones."""
    root = write_dataset(tmp_path / "mixed", episodes=4, frames=FRAMES, failed=(1, 2))
    assert len(ChunkDataset([str(root)], chunk_size=8)) == 4 * FRAMES
    dataset = ChunkDataset([str(root)], chunk_size=8, success_only=True)
    assert len(dataset) == 2 * FRAMES and dataset.filtered_out == 2
    assert [record.episode_index for record in dataset.episodes] == [0, 3]
    failed = write_dataset(tmp_path / "failed", episodes=1, frames=FRAMES, failed=(0,))
    with pytest.raises(RecordingError, match="not successful"):
        ChunkDataset([str(failed)], chunk_size=8, success_only=True)


def test_source_filter_and_intervention_weight(tmp_path):
    """Catches intervention frames that are not told apart from policy frames (filter, mask and weight):
    DAgger's corrections would then count no more than the policy's own mistakes."""
    root = write_dataset(tmp_path / "dagger", episodes=2, frames=FRAMES, intervention=(6, 12))
    plain = ChunkDataset([str(root)], chunk_size=8, intervention_weight=4.0)
    assert len(plain) == 2 * FRAMES and plain.intervention_frames == 2 * 6
    weights = [float(plain[i]["weight"]) for i in range(FRAMES)]
    assert weights == [1.0] * 6 + [4.0] * 6 + [1.0] * (FRAMES - 12)
    only = ChunkDataset([str(root)], chunk_size=8, source_filter=("intervention",))
    assert len(only) == 2 * 6 and only.episode_lengths == [6, 6]
    first, last = only[0], only[5]  # frames 6 and 11 of episode 0
    positions = trajectory(0, FRAMES)
    np.testing.assert_allclose(first["state"].numpy(), positions[6], atol=1e-6)
    assert first["action_mask"].tolist() == [True] * 6 + [False] * 2  # steps 6..11 are corrections, 12.. not
    assert last["action_mask"].tolist() == [True] + [False] * 7
    with pytest.raises(RecordingError, match="sources"):
        ChunkDataset([str(root)], chunk_size=8, source_filter=("teleop",))
