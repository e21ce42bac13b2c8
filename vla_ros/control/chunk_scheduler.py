"""The time-indexed plan: which target is due at time t, blending overlapping chunks.

A chunk stamped s with step dt puts action k at time s + k*dt. Between two steps the target is
the linear interpolation of the two actions, so a 50 Hz control loop on 10 Hz chunk steps moves
smoothly instead of in 10 Hz stairs. A chunk covers every time up to its last step; it is only
consulted from its arrival on, so steps already past on arrival are never played (at most the
step just before arrival anchors the interpolation towards the next one).

Blending among the chunks that cover t (ordered by stamp, then arrival):
  newest             the newest chunk alone;
  temporal_ensemble  ACT's weighted mean with w_i = exp(-m*i), i = 0 for the oldest chunk;
  crossfade          each chunk fades in linearly over crossfade_s from its arrival, over the
                     blend of the older ones (a chunk that ends mid-fade drops out of it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_ros.config.safety import BlendConfig

MAX_CHUNKS = 64  # bounds memory and work when chunks come fast with long horizons


@dataclasses.dataclass(frozen=True)
class PlannedChunk:
    """An accepted chunk as absolute targets in joint order, clipped to the position limits."""

    chunk_id: int
    stamp_ns: int  # action k due at stamp_ns + k * dt_s
    arrival_ns: int
    dt_s: float
    targets_rad: np.ndarray  # (H, J) within the position limits
    out_of_range: np.ndarray  # (H, J) bool: the policy asked for a position beyond the limits

    @property
    def end_ns(self) -> float:
        return self.stamp_ns + (self.targets_rad.shape[0] - 1) * self.dt_s * 1e9

    def sample(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(target (J,), out_of_range (J,) bool) at t_ns, linear between steps, held at the ends."""
        last = self.targets_rad.shape[0] - 1
        u = min(max((t_ns - self.stamp_ns) / (self.dt_s * 1e9), 0.0), float(last))
        k = min(int(u), max(last - 1, 0))
        frac = u - k
        if last == 0 or frac == 0.0:
            return self.targets_rad[k], self.out_of_range[k]
        target = self.targets_rad[k] * (1.0 - frac) + self.targets_rad[k + 1] * frac
        flagged = self.out_of_range[k] if frac < 1.0 else np.zeros_like(self.out_of_range[k])
        return target, flagged | self.out_of_range[k + 1]


class ChunkScheduler:
    """Accepted chunks, oldest first; pure bookkeeping and blending (validation is the caller's)."""

    def __init__(self) -> None:
        self._chunks: list[PlannedChunk] = []

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, chunk: PlannedChunk) -> None:
        self._chunks.append(chunk)  # the caller refuses older stamps, so the list stays stamp-ordered
        del self._chunks[:-MAX_CHUNKS]

    def clear(self) -> None:
        self._chunks.clear()

    def prune(self, now_ns: int) -> None:
        """Forget chunks whose last step is past."""
        self._chunks = [c for c in self._chunks if c.end_ns >= now_ns]

    def covers(self, t_ns: int) -> bool:
        return any(c.end_ns >= t_ns for c in self._chunks)

    def sample(self, t_ns: int, blend: BlendConfig) -> tuple[np.ndarray, np.ndarray] | None:
        """(target (J,), out_of_range (J,) bool) due at t_ns, or None if no chunk covers t_ns."""
        covering = [c for c in self._chunks if c.end_ns >= t_ns]
        if not covering:
            return None
        if blend.mode == "newest":
            return covering[-1].sample(t_ns)
        samples = [c.sample(t_ns) for c in covering]
        if blend.mode == "temporal_ensemble":
            logits = -blend.ensemble_decay * np.arange(len(covering), dtype=np.float64)
            weights = np.exp(logits - logits.max())  # shifted: no overflow for negative decay
            weights /= weights.sum()
            target = np.einsum("c,cj->j", weights, np.stack([s[0] for s in samples]))
            flagged = np.any([s[1] for s in samples], axis=0)  # every weight is > 0
            return target, flagged
        target, flagged = samples[0]
        for chunk, (new_target, new_flagged) in zip(covering[1:], samples[1:]):
            alpha = 1.0 if blend.crossfade_s == 0.0 else min(
                max((t_ns - chunk.arrival_ns) / (blend.crossfade_s * 1e9), 0.0), 1.0)
            if alpha >= 1.0:
                target, flagged = new_target, new_flagged
            elif alpha > 0.0:
                target = target * (1.0 - alpha) + new_target * alpha
                flagged = flagged | new_flagged
        return target, flagged
