"""The time-indexed plan: interpolation, coverage, and the three blend modes."""

from __future__ import annotations

import math

import numpy as np

from vla_ros.config.safety import BlendConfig
from vla_ros.control.chunk_scheduler import MAX_CHUNKS, ChunkScheduler, PlannedChunk

MS = 1_000_000


def _chunk(stamp_ms: int, rows: list[float], *, arrival_ms: int | None = None, dt_s: float = 0.1,
           out_of_range: list[bool] | None = None, chunk_id: int = 0) -> PlannedChunk:
    targets = np.array(rows, dtype=np.float64)[:, None]  # (H, 1)
    flags = np.array(out_of_range or [False] * len(rows))[:, None]
    return PlannedChunk(chunk_id, stamp_ms * MS, (stamp_ms if arrival_ms is None else arrival_ms) * MS,
                        dt_s, targets, flags)


def test_linear_interpolation_between_steps_and_held_ends() -> None:
    chunk = _chunk(1000, [0.0, 1.0, 3.0])
    assert chunk.sample(1000 * MS)[0][0] == 0.0
    assert math.isclose(chunk.sample(1020 * MS)[0][0], 0.2)  # 50 Hz tick between 10 Hz steps
    assert math.isclose(chunk.sample(1150 * MS)[0][0], 2.0)
    assert chunk.sample(1200 * MS)[0][0] == 3.0
    assert chunk.sample(900 * MS)[0][0] == 0.0 and chunk.end_ns == 1200 * MS


def test_out_of_range_flag_follows_the_steps_that_contribute() -> None:
    chunk = _chunk(0, [0.0, 1.0, 2.0], out_of_range=[False, False, True])
    assert not chunk.sample(50 * MS)[1][0]  # between steps 0 and 1
    assert chunk.sample(150 * MS)[1][0]  # step 2 contributes
    assert not chunk.sample(100 * MS)[1][0]  # exactly on step 1


def test_no_plan_after_the_last_step() -> None:
    plan = ChunkScheduler()
    plan.add(_chunk(0, [0.0, 1.0]))
    assert plan.covers(100 * MS) and not plan.covers(100 * MS + 1)
    assert plan.sample(100 * MS + 1, BlendConfig()) is None
    plan.prune(101 * MS)
    assert len(plan) == 0


def test_newest_takes_the_newest_covering_chunk() -> None:
    plan = ChunkScheduler()
    plan.add(_chunk(0, [0.0] * 10))
    plan.add(_chunk(100, [5.0, 5.0]))
    blend = BlendConfig(mode="newest")
    assert plan.sample(150 * MS, blend)[0][0] == 5.0
    assert plan.sample(250 * MS, blend)[0][0] == 0.0  # the newest one has ended; the older covers


def test_temporal_ensemble_weights_follow_act() -> None:
    plan = ChunkScheduler()
    plan.add(_chunk(0, [1.0] * 10))
    plan.add(_chunk(100, [2.0] * 10))
    plan.add(_chunk(200, [4.0] * 10))
    m = 0.7
    weights = np.exp(-m * np.arange(3))  # i = 0 for the oldest chunk
    expected = float(weights @ [1.0, 2.0, 4.0] / weights.sum())
    got = plan.sample(250 * MS, BlendConfig(mode="temporal_ensemble", ensemble_decay=m))[0][0]
    assert math.isclose(got, expected, rel_tol=1e-12), (got, expected)
    # Negative decay favours the newest; zero is the plain mean; a huge one cannot overflow.
    newest_first = plan.sample(250 * MS, BlendConfig(mode="temporal_ensemble", ensemble_decay=-5.0))
    assert newest_first[0][0] > 3.9
    assert math.isclose(plan.sample(250 * MS, BlendConfig(ensemble_decay=0.0))[0][0], 7.0 / 3.0)
    # Only chunks covering the instant take part: the first ends at 900 ms.
    later = plan.sample(950 * MS, BlendConfig(mode="temporal_ensemble", ensemble_decay=m))[0][0]
    assert math.isclose(later, (2.0 + 4.0 * math.exp(-m)) / (1.0 + math.exp(-m)))


def test_crossfade_is_linear_over_crossfade_s_from_arrival() -> None:
    plan = ChunkScheduler()
    plan.add(_chunk(0, [0.0] * 10))
    plan.add(_chunk(90, [1.0] * 10, arrival_ms=100))
    blend = BlendConfig(mode="crossfade", crossfade_s=0.2)
    assert plan.sample(100 * MS, blend)[0][0] == 0.0
    assert math.isclose(plan.sample(150 * MS, blend)[0][0], 0.25)
    assert math.isclose(plan.sample(200 * MS, blend)[0][0], 0.5)
    assert plan.sample(300 * MS, blend)[0][0] == 1.0
    assert plan.sample(150 * MS, BlendConfig(mode="crossfade", crossfade_s=0.0))[0][0] == 1.0


def test_plan_memory_is_bounded() -> None:
    plan = ChunkScheduler()
    for k in range(MAX_CHUNKS + 10):
        plan.add(_chunk(k, [float(k)] * 1000, chunk_id=k))
    assert len(plan) == MAX_CHUNKS
    assert plan.sample(MAX_CHUNKS * MS, BlendConfig(mode="newest"))[0][0] == MAX_CHUNKS + 9
