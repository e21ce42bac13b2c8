"""Data order: a pure function of (seed, epoch), so a resumed run reads exactly the batches it would have.

Each epoch shuffles the episodes, groups them into blocks, and shuffles the frames within each block: with a
block that fits the frame cache, every episode's video is decoded about once per epoch instead of once per
sample. A block as large as the dataset is a plain full shuffle.

Micro-batch b of the run (counting from 0 over all epochs) is the b-th slice of `batch_size * world_size`
samples of the concatenated epoch orders; rank r takes its r-th part. The last incomplete global batch of an
epoch is dropped, so every rank always gets the same number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from vla_ros.errors import ConfigError


def epoch_order(episode_lengths: Sequence[int], episodes_per_block: int, seed: int, epoch: int) -> np.ndarray:
    """(N,) permutation of all sample indices for one epoch; samples are numbered episode after episode."""
    starts = np.cumsum([0, *episode_lengths])
    rng = np.random.default_rng([seed, epoch])
    episodes = rng.permutation(len(episode_lengths))
    parts = []
    for first in range(0, len(episodes), episodes_per_block):
        block = episodes[first: first + episodes_per_block]
        samples = np.concatenate([np.arange(starts[e], starts[e + 1]) for e in block])
        parts.append(rng.permutation(samples))
    return np.concatenate(parts)


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless micro-batches of sample indices for one rank, starting at run micro-batch `start_batch`."""

    def __init__(self, episode_lengths: Sequence[int], batch_size: int, seed: int, *, episodes_per_block: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        self.episode_lengths = list(episode_lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.episodes_per_block = max(1, episodes_per_block)
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = sum(self.episode_lengths) // self.global_batch
        if self.batches_per_epoch == 0:
            raise ConfigError(f"batch_size={batch_size} x {world_size} process(es) = {self.global_batch} is more "
                              f"than the {sum(self.episode_lengths)} samples of the dataset")

    def position(self, batch: int) -> tuple[int, int]:
        """Run micro-batch -> (epoch, micro-batch within the epoch)."""
        return divmod(batch, self.batches_per_epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        cached_epoch, order = -1, np.empty(0, np.int64)
        while True:
            epoch, within = self.position(batch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, epoch_order(self.episode_lengths, self.episodes_per_block,
                                                         self.seed, epoch)
            first = within * self.global_batch + self.rank * self.batch_size
            yield order[first: first + self.batch_size].tolist()
            batch += 1
