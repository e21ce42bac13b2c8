"""Fixtures: one tiny recorder-written dataset per session (tests that damage it work on a copy)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test.training.tiny import write_dataset


@pytest.fixture(scope="session")
def recorded_dataset(tmp_path_factory) -> Path:
    """6 episodes x 24 frames, 64x64 camera 'front', 7 joints, 10 fps, two tasks. Read-only."""
    return write_dataset(tmp_path_factory.mktemp("recorded") / "dataset")


@pytest.fixture
def dataset_copy(recorded_dataset, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(recorded_dataset, tmp_path / "dataset"))
