"""NormStats: q01/q99 bounds to [-1, 1] and back, JSON round trip, numpy and torch alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.errors import CheckpointError, ConfigError
from vla_ros.model.normalization import FeatureStats, NormStats

RNG = np.random.default_rng(0)
STATS = NormStats.from_arrays(RNG.normal(3.0, 2.0, size=(2000, 4)), RNG.normal(size=(2000, 3)))


def test_quantile_bounds_map_to_minus_one_and_one():
    action = STATS.action
    np.testing.assert_allclose(STATS.normalize_actions(action.q01), -1.0)
    np.testing.assert_allclose(STATS.normalize_actions(action.q99), 1.0)
    np.testing.assert_allclose(STATS.normalize_actions((action.q01 + action.q99) / 2), 0.0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4))
def test_unnormalize_then_normalize_is_identity(values):
    normalised = np.array(values)
    np.testing.assert_allclose(STATS.normalize_actions(STATS.unnormalize_actions(normalised)), normalised, atol=1e-9)


def test_outliers_are_clipped_not_extrapolated():
    far = STATS.action.q99 + 100.0
    np.testing.assert_allclose(STATS.normalize_actions(far), 1.0)


def test_torch_and_numpy_agree():
    values = RNG.normal(3.0, 2.0, size=(5, 16, 4))
    torch.testing.assert_close(STATS.normalize_actions(torch.from_numpy(values)),
                               torch.from_numpy(STATS.normalize_actions(values)))


def test_mean_std_mode_is_a_z_score():
    stats = NormStats(action=STATS.action, mode="mean_std")
    np.testing.assert_allclose(stats.normalize_actions(STATS.action.mean + STATS.action.std), 1.0)


def test_constant_dimension_round_trips():
    constant = NormStats.from_arrays(np.ones((10, 1)))
    assert constant.unnormalize_actions(constant.normalize_actions(np.ones(1)))[0] == pytest.approx(1.0)


def test_json_round_trip(tmp_path):
    STATS.save(tmp_path / "stats.json")
    loaded = NormStats.load(tmp_path / "stats.json")
    for name in ("q01", "q99", "mean", "std"):
        np.testing.assert_array_equal(getattr(loaded.action, name), getattr(STATS.action, name))
        np.testing.assert_array_equal(getattr(loaded.state, name), getattr(STATS.state, name))


def test_missing_or_broken_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.json not found"):
        NormStats.load(tmp_path / "nothere.json")
    (tmp_path / "bad.json").write_text('{"action": {"q01": [0.0]}}')
    with pytest.raises(CheckpointError, match="bad.json is not valid NormStats"):
        NormStats.load(tmp_path / "bad.json")


def test_invalid_stats_are_refused():
    with pytest.raises(ConfigError, match="same"):
        FeatureStats(q01=np.zeros(2), q99=np.ones(3), mean=np.zeros(2), std=np.ones(2))
    with pytest.raises(ConfigError, match="finite"):
        FeatureStats(q01=np.array([np.nan]), q99=np.ones(1), mean=np.zeros(1), std=np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        FeatureStats.from_array(np.array([[np.inf]]))
