"""Data order (resumable, block-local, disjoint across ranks) and the masked L1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vla_ros.errors import ConfigError
from vla_ros.training.losses import masked_l1
from vla_ros.training.sampler import ResumableBatchSampler, epoch_order

LENGTHS = [7, 12, 5, 9, 11, 6]


def _take(sampler: ResumableBatchSampler, count: int) -> list[list[int]]:
    return list(itertools.islice(iter(sampler), count))


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    order = epoch_order(LENGTHS, 2, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(sum(LENGTHS)))
    assert np.array_equal(order, epoch_order(LENGTHS, 2, seed=3, epoch=0))
    assert not np.array_equal(order, epoch_order(LENGTHS, 2, seed=3, epoch=1))
    assert not np.array_equal(order, epoch_order(LENGTHS, 2, seed=4, epoch=0))


def test_blocks_keep_episodes_together():
    starts = np.cumsum([0, *LENGTHS])
    order = epoch_order(LENGTHS, 2, seed=0, epoch=0)
    episode_of = (np.searchsorted(starts, order, side="right") - 1).tolist()
    blocks, position = [], 0
    while position < len(episode_of):  # each block: all samples of two episodes, then the next block
        first = episode_of[position]
        partner = next(e for e in episode_of[position:] if e != first)
        size = LENGTHS[first] + LENGTHS[partner]
        assert set(episode_of[position: position + size]) == {first, partner}
        blocks.append({first, partner})
        position += size
    assert len(blocks) == 3 and set().union(*blocks) == set(range(len(LENGTHS)))


def test_resumed_sampler_continues_the_same_sequence_across_epochs():
    full = _take(ResumableBatchSampler(LENGTHS, 4, seed=1, episodes_per_block=3), 30)  # 12 per epoch: 2.5 epochs
    resumed = _take(ResumableBatchSampler(LENGTHS, 4, seed=1, episodes_per_block=3, start_batch=17), 13)
    assert resumed == full[17:]


def test_ranks_get_disjoint_parts_of_each_global_batch():
    ranks = [_take(ResumableBatchSampler(LENGTHS, 3, seed=0, episodes_per_block=6, rank=r, world_size=2), 8)
             for r in range(2)]
    single = _take(ResumableBatchSampler(LENGTHS, 6, seed=0, episodes_per_block=6), 8)
    for a, b, both in zip(*ranks, single):
        assert not set(a) & set(b) and a + b == both


def test_batch_larger_than_the_dataset_is_refused():
    with pytest.raises(ConfigError, match="more than the 50 samples"):
        ResumableBatchSampler(LENGTHS, 51, seed=0, episodes_per_block=1)


def test_masked_l1_ignores_padded_steps():
    generator = torch.Generator().manual_seed(0)
    predicted, target = torch.randn(3, 5, 4, generator=generator), torch.randn(3, 5, 4, generator=generator)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] + [False] * 4])
    loss = masked_l1(predicted, target, mask)
    expected = torch.cat([(predicted - target)[i, : int(mask[i].sum())].abs().flatten() for i in range(3)]).mean()
    torch.testing.assert_close(loss, expected)
    changed = predicted.clone()
    changed[~mask] = 100.0  # whatever the model predicts past the episode end costs nothing
    torch.testing.assert_close(masked_l1(changed, target, mask), loss)
    changed[0, 0, 0] += 1.0
    assert masked_l1(changed, target, mask) > loss


def test_masked_l1_equals_the_model_head_loss_when_nothing_is_padded():
    from vla_ros.model.heads import ParallelL1Head

    predicted, target = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    torch.testing.assert_close(masked_l1(predicted, target, torch.ones(2, 4, dtype=torch.bool)),
                               ParallelL1Head.loss(predicted, target))


def test_masked_l1_with_weights_is_the_weighted_mean():
    """Catches intervention_weight being ignored or renormalising away (a weight must shift the mean)."""
    predicted = torch.zeros(2, 3, 2)
    target = torch.stack([torch.ones(3, 2), 3 * torch.ones(3, 2)])  # errors 1 and 3
    mask = torch.tensor([[True, True, False], [True, True, True]]).float() * torch.tensor([1.0, 4.0])[:, None]
    expected = (2 * 2 * 1.0 + 3 * 2 * 3.0 * 4.0) / ((2 + 3 * 4.0) * 2)
    assert float(masked_l1(predicted, target, mask)) == pytest.approx(expected)
