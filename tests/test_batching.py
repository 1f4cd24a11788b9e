"""The batch sampler: DDP ranks see exactly the slices of the single-process batches."""

import numpy as np

from ssl_lightning.data.batching import BatchIndexSampler


def batches(world: int, rank: int, batch: int, epoch: int, shuffle: bool = True) -> list:
    sampler = BatchIndexSampler(
        np.arange(100, 200), batch, shuffle, seed=7, rank=rank, world_size=world
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def test_two_ranks_split_each_single_process_batch():
    single = batches(world=1, rank=0, batch=16, epoch=2)
    rank0, rank1 = batches(2, 0, 8, 2), batches(2, 1, 8, 2)
    assert len(single) == len(rank0) == len(rank1) == 6  # 100 // 16, drop_last
    for whole, a, b in zip(single, rank0, rank1, strict=True):
        assert np.array_equal(whole, np.concatenate([a, b]))


def test_epochs_reshuffle_and_seed_fixes_the_order():
    assert not np.array_equal(batches(1, 0, 10, 0)[0], batches(1, 0, 10, 1)[0])
    assert np.array_equal(batches(1, 0, 10, 1)[0], batches(1, 0, 10, 1)[0])


def test_evaluation_covers_every_sample_with_equal_rank_shares():
    parts = [batches(3, r, 8, 0, shuffle=False) for r in range(3)]
    seen = np.concatenate([np.concatenate(p) for p in parts])
    assert set(seen) == set(range(100, 200))
    assert len({len(np.concatenate(p)) for p in parts}) == 1  # equal shares (padded)
