"""Per-episode and dataset statistics in LeRobot's layout (min, max, mean, std, count, quantiles).

Numeric features: per dimension over the episode's frames; quantiles q01..q99 are exact per episode.
Images: per channel over a subsample of frames, in [0, 1], shaped (3, 1, 1); no quantiles.
The dataset's stats.json aggregates episodes: exact min, max, count, mean and pooled std; quantiles
are the count-weighted mean of the episodes' quantiles (an approximation, as in LeRobot).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
NUMERIC_STATS_FEATURES = ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index",
                          "task_index")


def numeric_stats(values: np.ndarray) -> dict[str, list]:
    """values: (N,) or (N, D) -> every stat as a list of D (1 for scalars); N >= 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    out: dict[str, list] = {
        "min": v.min(axis=0).tolist(), "max": v.max(axis=0).tolist(), "mean": v.mean(axis=0).tolist(),
        "std": v.std(axis=0).tolist(), "count": [int(v.shape[0])],
    }
    for name, q in QUANTILES.items():
        out[name] = np.quantile(v, q, axis=0).tolist()
    return out


def aggregate(per_episode: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, list]]:
    """Dataset stats from episode stats (features missing from some episodes use the others)."""
    features = sorted({k for ep in per_episode for k in ep})
    out: dict[str, dict[str, list]] = {}
    for feature in features:
        eps = [ep[feature] for ep in per_episode if feature in ep]
        counts = np.array([float(e["count"][0]) for e in eps])
        total = counts.sum()
        weights = counts / total

        def arr(e: dict, key: str) -> np.ndarray:
            return np.asarray(e[key], dtype=np.float64)

        means = np.stack([arr(e, "mean") for e in eps])
        stds = np.stack([arr(e, "std") for e in eps])
        w = weights.reshape((-1,) + (1,) * (means.ndim - 1))
        mean = (w * means).sum(axis=0)
        var = (w * (stds ** 2 + (means - mean) ** 2)).sum(axis=0)
        stats = {
            "min": np.min(np.stack([arr(e, "min") for e in eps]), axis=0).tolist(),
            "max": np.max(np.stack([arr(e, "max") for e in eps]), axis=0).tolist(),
            "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(total)],
        }
        for name in QUANTILES:
            if all(name in e for e in eps):
                stats[name] = (w * np.stack([arr(e, name) for e in eps])).sum(axis=0).tolist()
        out[feature] = stats
    return out
