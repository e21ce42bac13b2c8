"""Tiny training runs on datasets written by our own recorder (vla_ros.recording DatasetWriter, fed as the
ROS adapters feed it).

Each episode is a smooth joint trajectory; the command (action) at frame k is the state of frame k + 1, and
the camera shows a bright square whose position follows the trajectory, so chunks are learnable from images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.config.recorder import RecorderConfig
from vla_ros.recording.spec import CameraSpec, DatasetSpec
from vla_ros.recording.writer import DatasetWriter
from vla_ros.training.config import TrainConfig

JOINTS = ("joint_1", "joint_2", "joint_3", "joint_4", "joint_5", "joint_6", "gripper")
TASKS = ("pick up the red cube", "push the blue block left")
FPS = 10
ROBOT_TYPE = "tiny_sim_arm"  # written to meta/info.json; trained checkpoints carry it
IMAGE_HW = (64, 64)


def trajectory(episode: int, frames: int) -> np.ndarray:
    """(frames + 1, J) joint positions: each episode sweeps with its own speed and offset."""
    t = np.arange(frames + 1)[:, None] / frames
    speed = 0.5 + 0.25 * (episode % 3)
    offsets = np.linspace(-0.4, 0.4, len(JOINTS))[None, :] + 0.05 * episode
    positions = offsets + speed * np.sin(np.pi * t + np.arange(len(JOINTS))[None, :] * 0.3)
    positions[:, -1] = (t[:, 0] > 0.5).astype(float)  # gripper closes halfway
    return positions


def image(positions: np.ndarray, frame: int) -> np.ndarray:
    height, width = IMAGE_HW
    rgb = np.full((height, width, 3), 40, np.uint8)
    row = int(np.clip((positions[0] + 1.5) / 3.0, 0, 1) * (height - 12))
    col = int(np.clip((positions[1] + 1.5) / 3.0, 0, 1) * (width - 12))
    rgb[row: row + 12, col: col + 12] = (220, 60 + 10 * (frame % 10), 60)
    rgb[:, :4, 2] = int(255 * positions[-1])  # a gripper indicator stripe
    return rgb


def write_dataset(root: Path, episodes: int = 6, frames: int = 24, intervention: tuple[int, int] | None = None,
                  failed: tuple[int, ...] = ()) -> Path:
    """A LeRobot v3 dataset of `episodes` x `frames` frames at FPS, one 64x64 camera 'front'.

    intervention=(first, end): policy episodes whose frames first..end-1 are marked as an intervention.
    failed: indices of episodes recorded with is_success=False (the others are successful).
    """
    spec = DatasetSpec(ROBOT_TYPE, FPS, JOINTS, JOINTS, (CameraSpec("front", *IMAGE_HW),))
    period_ns = 1_000_000_000 // FPS
    with DatasetWriter(root, spec, RecorderConfig(min_free_disk_mb=0)) as writer:
        for episode in range(episodes):
            writer.start_episode(TASKS[episode % len(TASKS)], "scripted" if intervention is None else "policy")
            positions = trajectory(episode, frames)
            start_ns = (episode + 1) * 1_000 * 1_000_000_000
            for k in range(frames):
                stamp_ns = start_ns + k * period_ns
                if intervention is not None and k in intervention:
                    writer.mark_intervention(k == intervention[0], stamp_ns - 1)
                writer.add_image("front", image(positions[k], k), stamp_ns)
                writer.add_joint_state(positions[k], stamp_ns)
                writer.add_command(positions[k + 1], stamp_ns)
            summary = writer.stop_episode(keep=True, is_success=episode not in failed)
            assert summary.kept and summary.frame_count == frames, summary.message
    return root


def tiny_train_config(dataset: Path, output: Path, **overrides) -> TrainConfig:
    """A tiny run that learns within a few dozen CPU steps (one learning rate, proprio on)."""
    lr = overrides.pop("lr", 3e-3)
    settings = dict(datasets=(str(dataset),), output=str(output), model="tiny", chunk_size=8, steps=8,
                    batch_size=8, save_every=1000, log_every=1, lr_vlm=lr, lr_expert=lr, lr_new=lr, lr_head=lr,
                    min_lr=lr / 10, use_proprio=True, progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)
