"""The two showcase tasks: randomised layouts and success checks (numpy only, no MuJoCo).

Layout ranges (world frame of scene.py, metres; `side` is +1 or -1 with equal probability):
  pour:  cup  x in [0.34, 0.48], y = side * [0.12, 0.22];
         bowl x in [0.36, 0.48], y = -side * [0.04, 0.14]
  write: paper centre x in [0.40, 0.46], y in [-0.04, 0.04] (long side along x);
         pen  x in [0.30, 0.40], y = side * [0.16, 0.22], standing on its tip;
         letter one of LETTERS, 0.08 m tall and 0.06 m wide, centred on the paper, written to be
         read from the front camera: its "up" is -x, its "right" +y. The sim draws the letter on
         the sheet as a faint guide to trace, so where to write can be seen, not only known.

Success:
  pour:  the cup is held with its axis tilted more than POUR_TILT_DEG from vertical while the centre
         of its opening is above the bowl (horizontal distance < BOWL_RADIUS_M, higher than the rim),
         continuously for POUR_HOLD_S.
  write: ink is laid where the pen tip is within INK_DISTANCE_M above (or up to 1 cm pressed into)
         the sheet. Success when the letter's polyline, sampled every 2 mm, lies on average closer
         than WRITE_MEAN_DISTANCE_M to the ink, COVERAGE_RATIO of its samples are within
         COVERAGE_DISTANCE_M of ink, and PRECISION_RATIO of the ink lies within
         PRECISION_DISTANCE_M of the letter (no scribbling).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vla_ros.config.sim import SIM_TASKS
from vla_ros.errors import ConfigError
from vla_ros.sim.scene import BOWL_HEIGHT_M, BOWL_RADIUS_M, PAPER_HALF_SIZE_M, PAPER_THICKNESS_M

LETTERS = ("L", "V", "Z", "N")
# Single-stroke polylines in letter units: u to the right, v up, both in [0, 1].
LETTER_STROKES_UV = {
    "L": ((0.0, 1.0), (0.0, 0.0), (1.0, 0.0)),
    "V": ((0.0, 1.0), (0.5, 0.0), (1.0, 1.0)),
    "Z": ((0.0, 1.0), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0)),
    "N": ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)),
}
LETTER_HEIGHT_M = 0.08
LETTER_WIDTH_M = 0.06
LETTER_UP_XY = np.array([-1.0, 0.0])  # readable from the front camera
LETTER_RIGHT_XY = np.array([0.0, 1.0])

POUR_TILT_DEG = 60.0
POUR_HOLD_S = 0.3
POUR_LIFT_M = 0.05  # lift that earns the "lifted" part of the score
INK_DISTANCE_M = 0.004
WRITE_MEAN_DISTANCE_M = 0.005
COVERAGE_DISTANCE_M = 0.008
COVERAGE_RATIO = 0.9
PRECISION_DISTANCE_M = 0.01
PRECISION_RATIO = 0.8
INK_SPACING_M = 0.001  # ink points closer than this to the previous one are not stored
TARGET_SPACING_M = 0.002


@dataclasses.dataclass(frozen=True)
class TaskResult:
    success: bool
    score: float  # progress in [0, 1]; 1 only when successful
    details: dict[str, Any]  # JSON-serialisable numbers, booleans and strings


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSpec:
    """What a reset set up: the task, its object placement and its instruction."""

    task: str
    seed: int
    instruction: str
    object_xy: dict[str, tuple[float, float]]  # placed objects only, world xy [m]
    letter: str = ""  # write only
    letter_xy: np.ndarray | None = None  # (K, 2) polyline vertices in world xy [m]; write only


def letter_polyline_xy(letter: str, center_xy: np.ndarray) -> np.ndarray:
    """(K, 2) world xy vertices of `letter` centred at center_xy."""
    if letter not in LETTER_STROKES_UV:
        raise ConfigError(f"letter: {letter!r} is not one of {list(LETTER_STROKES_UV)}")
    uv = np.asarray(LETTER_STROKES_UV[letter], dtype=float) - 0.5
    return (np.asarray(center_xy, dtype=float)
            + uv[:, :1] * LETTER_WIDTH_M * LETTER_RIGHT_XY
            + uv[:, 1:] * LETTER_HEIGHT_M * LETTER_UP_XY)


def sample_task(task: str, seed: int) -> TaskSpec:
    """The layout of `task` for `seed` (same seed, same layout)."""
    if task not in SIM_TASKS:
        raise ConfigError(f"task: {task!r} is not one of {list(SIM_TASKS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    rng = np.random.default_rng([int(seed), SIM_TASKS.index(task)])
    side = 1.0 if rng.random() < 0.5 else -1.0
    if task == "pour":
        cup = (rng.uniform(0.34, 0.48), side * rng.uniform(0.12, 0.22))
        bowl = (rng.uniform(0.36, 0.48), -side * rng.uniform(0.04, 0.14))
        return TaskSpec(task, int(seed), "pour the cup into the bowl", {"cup": cup, "bowl": bowl})
    paper = (rng.uniform(0.40, 0.46), rng.uniform(-0.04, 0.04))
    pen = (rng.uniform(0.30, 0.40), side * rng.uniform(0.16, 0.22))
    letter = LETTERS[int(rng.integers(len(LETTERS)))]
    return TaskSpec(task, int(seed), f"write the letter {letter} on the paper",
                    {"paper": paper, "pen": pen}, letter, letter_polyline_xy(letter, np.asarray(paper)))


def resample_polyline(vertices: np.ndarray, spacing_m: float) -> np.ndarray:
    """(K, D) vertices -> (N, D) points along the polyline, at most spacing_m apart, ends kept."""
    out = [vertices[:1]]
    for a, b in zip(vertices[:-1], vertices[1:]):
        count = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing_m)))
        t = np.arange(1, count + 1)[:, None] / count
        out.append(a + t * (b - a))
    return np.concatenate(out)


def point_to_segments_distance(points: np.ndarray, seg_a: np.ndarray, seg_b: np.ndarray) -> np.ndarray:
    """(N, 2) points, (S, 2) segment ends -> (N,) distance to the nearest segment [m]."""
    ab = seg_b - seg_a  # (S, 2)
    length2 = np.maximum(np.einsum("sd,sd->s", ab, ab), 1e-18)  # degenerate segments are points
    ap = points[:, None, :] - seg_a[None, :, :]  # (N, S, 2)
    t = np.clip(np.einsum("nsd,sd->ns", ap, ab) / length2, 0.0, 1.0)
    nearest = seg_a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - nearest, axis=-1).min(axis=1)


class PourMonitor:
    """Watches the cup during an episode; feed it once per physics step."""

    def __init__(self, cup_start_z_m: float) -> None:
        self._cup_start_z_m = cup_start_z_m
        self.was_grasped = False
        self.max_lift_m = 0.0
        self.max_tilt_deg = 0.0
        self.pour_time_s = 0.0  # current uninterrupted pouring
        self.best_pour_time_s = 0.0
        self.min_pour_distance_m = float("inf")  # opening to bowl centre while tilted enough

    def update(self, dt_s: float, cup_pos: np.ndarray, cup_rot: np.ndarray, cup_top: np.ndarray,
               bowl_pos: np.ndarray, is_cup_grasped: bool) -> None:
        """cup_rot (3, 3) world-from-cup rotation; positions (3,) world [m]."""
        tilt_deg = float(np.degrees(np.arccos(np.clip(cup_rot[2, 2], -1.0, 1.0))))
        self.was_grasped |= is_cup_grasped
        self.max_lift_m = max(self.max_lift_m, float(cup_pos[2] - self._cup_start_z_m))
        self.max_tilt_deg = max(self.max_tilt_deg, tilt_deg)
        distance = float(np.linalg.norm(cup_top[:2] - bowl_pos[:2]))
        is_tilted = tilt_deg > POUR_TILT_DEG
        if is_tilted:
            self.min_pour_distance_m = min(self.min_pour_distance_m, distance)
        is_over_bowl = distance < BOWL_RADIUS_M and cup_top[2] > bowl_pos[2] + BOWL_HEIGHT_M
        if is_cup_grasped and is_tilted and is_over_bowl:
            self.pour_time_s += dt_s
            self.best_pour_time_s = max(self.best_pour_time_s, self.pour_time_s)
        else:
            self.pour_time_s = 0.0

    def result(self) -> TaskResult:
        is_success = self.best_pour_time_s >= POUR_HOLD_S
        score = (0.25 * self.was_grasped + 0.25 * min(1.0, max(0.0, self.max_lift_m) / POUR_LIFT_M)
                 + 0.5 * min(1.0, self.best_pour_time_s / POUR_HOLD_S))
        distance = self.min_pour_distance_m
        return TaskResult(is_success, float(score), {
            "task": "pour", "cup_grasped": self.was_grasped, "max_lift_m": round(self.max_lift_m, 4),
            "max_tilt_deg": round(self.max_tilt_deg, 2), "pour_time_s": round(self.best_pour_time_s, 3),
            "min_pour_distance_m": None if distance == float("inf") else round(distance, 4)})


class WriteMonitor:
    """Records the ink the pen tip lays on the sheet and compares it with the target letter."""

    def __init__(self, letter_xy: np.ndarray, paper_center_xy: np.ndarray) -> None:
        self._target_xy = resample_polyline(np.asarray(letter_xy, dtype=float), TARGET_SPACING_M)  # (N, 2)
        self._letter_xy = np.asarray(letter_xy, dtype=float)
        self._paper_center_xy = np.asarray(paper_center_xy, dtype=float)
        self.strokes: list[list[np.ndarray]] = []  # each a list of (2,) xy points [m]
        self._is_inking = False

    def update(self, tip_pos: np.ndarray) -> None:
        """tip_pos (3,) world position of the pen tip [m]."""
        height_m = float(tip_pos[2]) - PAPER_THICKNESS_M
        offset = np.abs(tip_pos[:2] - self._paper_center_xy)
        is_on_paper = bool(offset[0] <= PAPER_HALF_SIZE_M[0] and offset[1] <= PAPER_HALF_SIZE_M[1])
        is_inking = is_on_paper and -0.01 <= height_m <= INK_DISTANCE_M
        if is_inking:
            xy = np.array(tip_pos[:2], dtype=float)
            if not self._is_inking:
                self.strokes.append([xy])
            elif np.linalg.norm(xy - self.strokes[-1][-1]) >= INK_SPACING_M:
                self.strokes[-1].append(xy)
        self._is_inking = is_inking

    def ink_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, 2) start and end points of every inked segment (a lone dot is a zero-length one)."""
        starts, ends = [], []
        for stroke in self.strokes:
            points = np.asarray(stroke)
            if len(points) == 1:
                points = np.concatenate([points, points])
            starts.append(points[:-1])
            ends.append(points[1:])
        if not starts:
            return np.zeros((0, 2)), np.zeros((0, 2))
        return np.concatenate(starts), np.concatenate(ends)

    def result(self) -> TaskResult:
        seg_a, seg_b = self.ink_segments()
        ink_count = sum(len(s) for s in self.strokes)
        if len(seg_a) == 0:
            return TaskResult(False, 0.0, {"task": "write", "ink_points": 0, "mean_distance_m": None,
                                           "coverage": 0.0, "precision": 0.0})
        target_distance = point_to_segments_distance(self._target_xy, seg_a, seg_b)
        ink_points = np.concatenate([np.asarray(s) for s in self.strokes])
        ink_distance = point_to_segments_distance(ink_points, self._letter_xy[:-1], self._letter_xy[1:])
        mean_distance = float(target_distance.mean())
        coverage = float(np.mean(target_distance < COVERAGE_DISTANCE_M))
        precision = float(np.mean(ink_distance < PRECISION_DISTANCE_M))
        is_success = (mean_distance < WRITE_MEAN_DISTANCE_M and coverage >= COVERAGE_RATIO
                      and precision >= PRECISION_RATIO)
        closeness = min(1.0, WRITE_MEAN_DISTANCE_M / max(mean_distance, 1e-9))
        return TaskResult(is_success, coverage * precision * closeness, {
            "task": "write", "ink_points": ink_count, "strokes": len(self.strokes),
            "mean_distance_m": round(mean_distance, 5), "coverage": round(coverage, 4),
            "precision": round(precision, 4)})
