"""Task layouts and success checks, fed with synthetic poses (no MuJoCo)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.errors import ConfigError
from vla_ros.sim.scene import BOWL_HEIGHT_M, PAPER_THICKNESS_M
from vla_ros.sim.tasks import (LETTER_HEIGHT_M, LETTERS, PourMonitor, WriteMonitor,
                               letter_polyline_xy, point_to_segments_distance, resample_polyline,
                               sample_task)

BOWL = np.array([0.4, 0.1, 0.0])


def _tilted(angle_deg: float) -> np.ndarray:
    """Cup rotation tilted about the world x axis."""
    a = np.radians(angle_deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def _pour(monitor: PourMonitor, duration_s: float, top_xy=(0.4, 0.1), tilt_deg=90.0,
          grasped=True) -> None:
    top = np.array([*top_xy, BOWL_HEIGHT_M + 0.05])
    for _ in range(int(round(duration_s / 0.01))):
        monitor.update(0.01, top - [0.0, 0.0, 0.05], _tilted(tilt_deg), top, BOWL, grasped)


def test_layouts_are_deterministic_and_within_documented_ranges() -> None:
    for seed in range(200):
        pour = sample_task("pour", seed)
        assert pour.object_xy == sample_task("pour", seed).object_xy
        (cx, cy), (bx, by) = pour.object_xy["cup"], pour.object_xy["bowl"]
        assert 0.34 <= cx <= 0.48 and 0.12 <= abs(cy) <= 0.22
        assert 0.36 <= bx <= 0.48 and 0.04 <= abs(by) <= 0.14 and np.sign(by) == -np.sign(cy)
        write = sample_task("write", seed)
        (px, py), (qx, qy) = write.object_xy["paper"], write.object_xy["pen"]
        assert 0.40 <= px <= 0.46 and -0.04 <= py <= 0.04
        assert 0.30 <= qx <= 0.40 and 0.16 <= abs(qy) <= 0.22
        assert write.letter in LETTERS and write.letter in write.instruction
        np.testing.assert_array_equal(write.letter_xy, sample_task("write", seed).letter_xy)
        # centred on the sheet (the guide on the paper shows it too): where to write is observable
        np.testing.assert_allclose(write.letter_xy, letter_polyline_xy(write.letter, np.array([px, py])))
    assert sample_task("pour", 0).object_xy != sample_task("pour", 1).object_xy
    assert {sample_task("write", s).letter for s in range(50)} == set(LETTERS)


def test_bad_task_or_seed_refused() -> None:
    with pytest.raises(ConfigError, match="task: 'juggle' is not one of"):
        sample_task("juggle", 0)
    with pytest.raises(ConfigError, match="seed: expected an integer >= 0"):
        sample_task("pour", -1)


def test_letter_l_is_written_upright_for_the_front_camera() -> None:
    l_xy = letter_polyline_xy("L", np.zeros(2))
    top, corner, end = l_xy
    assert top[0] < corner[0]  # the letter's "up" is -x (away from the front camera)
    assert np.isclose(corner[0] - top[0], LETTER_HEIGHT_M) and end[1] > corner[1]


def test_segment_distance_and_resampling() -> None:
    seg_a, seg_b = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])
    d = point_to_segments_distance(np.array([[0.5, 0.2], [2.0, 0.0], [-1.0, 0.0]]), seg_a, seg_b)
    np.testing.assert_allclose(d, [0.2, 1.0, 1.0])
    points = resample_polyline(np.array([[0.0, 0.0], [0.01, 0.0]]), 0.002)
    assert len(points) == 6 and np.allclose(points[-1], [0.01, 0.0])


def test_pour_succeeds_when_held_tilted_over_the_bowl_long_enough() -> None:
    monitor = PourMonitor(cup_start_z_m=0.0)
    _pour(monitor, 0.4)
    result = monitor.result()
    assert result.success and result.score == pytest.approx(1.0), result.details


@pytest.mark.parametrize("kwargs", [
    {"tilt_deg": 45.0},  # not tilted enough
    {"top_xy": (0.4, 0.1 + 0.09)},  # opening beside the bowl
    {"grasped": False},  # e.g. knocked over onto the bowl
    {"duration_s": 0.2},  # too short
])
def test_pour_fails_otherwise(kwargs: dict) -> None:
    monitor = PourMonitor(cup_start_z_m=0.0)
    _pour(monitor, **({"duration_s": 0.4} | kwargs))
    result = monitor.result()
    assert not result.success and result.score < 1.0, result.details


def test_pour_hold_must_be_uninterrupted() -> None:
    monitor = PourMonitor(cup_start_z_m=0.0)
    _pour(monitor, 0.2)
    _pour(monitor, 0.05, tilt_deg=10.0)
    _pour(monitor, 0.2)
    assert not monitor.result().success and monitor.result().details["pour_time_s"] == pytest.approx(0.2)


def _write(monitor: WriteMonitor, path_xy: np.ndarray, height_m: float = 0.0) -> None:
    for xy in resample_polyline(path_xy, 0.001):
        monitor.update(np.array([xy[0], xy[1], PAPER_THICKNESS_M + height_m]))
    monitor.update(np.array([0.0, 0.0, 0.2]))  # pen lifted


@pytest.fixture
def letter_z() -> np.ndarray:
    return letter_polyline_xy("Z", np.array([0.43, 0.0]))


def test_write_succeeds_on_the_letter(letter_z) -> None:
    monitor = WriteMonitor(letter_z, np.array([0.43, 0.0]))
    _write(monitor, letter_z, height_m=0.002)
    result = monitor.result()
    assert result.success and result.score == pytest.approx(1.0), result.details
    assert result.details["strokes"] == 1


def test_write_fails_when_off_target_hovering_partial_or_scribbling(letter_z) -> None:
    paper = np.array([0.43, 0.0])
    cases = {"shifted": (letter_z + [0.0, 0.02], 0.0), "hovering": (letter_z, 0.01),
             "half": (letter_z[:2], 0.0)}
    for name, (path, height) in cases.items():
        monitor = WriteMonitor(letter_z, paper)
        _write(monitor, path, height)
        assert not monitor.result().success, (name, monitor.result().details)
    scribble = WriteMonitor(letter_z, paper)
    _write(scribble, letter_z)
    _write(scribble, np.array([[0.36, -0.06], [0.36, 0.06], [0.50, 0.06], [0.50, -0.06], [0.36, -0.06]]))
    result = scribble.result()
    assert result.details["coverage"] == 1.0 and result.details["precision"] < 0.8
    assert not result.success


def test_ink_only_on_the_paper(letter_z) -> None:
    monitor = WriteMonitor(letter_z, np.array([0.9, 0.0]))  # sheet far away from the letter
    _write(monitor, letter_z)
    assert monitor.result().details["ink_points"] == 0 and not monitor.result().success
