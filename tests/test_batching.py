"""The batch sampler: DDP ranks see exactly the slices of the single-process batches."""

import numpy as np
import pytest
from torch.utils.data import DataLoader

from ssl_lightning.data.batching import BatchIndexSampler, BatchReader, IndexBatch
from ssl_lightning.data.sources.synthetic import SyntheticSource


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


def evaluation(size: int, batch: int, world: int) -> list[list[IndexBatch]]:
    """Every rank's evaluation batches of the indices 100 .. 100 + size - 1."""
    indices = np.arange(100, 100 + size)
    return [
        list(BatchIndexSampler(indices, batch, False, seed=7, rank=rank, world_size=world))
        for rank in range(world)
    ]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 5, 37, 101])
def test_evaluation_reads_every_sample_once_in_equal_shapes_on_every_rank(size, world):
    """The SSL losses gather rows across ranks: same batch count and shapes everywhere, padding
    after the real rows, and `real_on_all_ranks` the same on every rank."""
    ranks = evaluation(size, 8, world)
    sampler = BatchIndexSampler(np.arange(size), 8, False, seed=7, rank=0, world_size=world)
    assert [len(batches) for batches in ranks] == [len(sampler)] * world
    for step in zip(*ranks, strict=True):
        assert len({len(b.indices) for b in step}) == 1
        assert {b.real_on_all_ranks for b in step} == {min(b.real for b in step)}
    real = np.concatenate([b.indices[: b.real] for batches in ranks for b in batches])
    assert sorted(real.tolist()) == list(range(100, 100 + size))  # each sample once


def test_evaluation_global_batches_are_the_single_process_batches():
    """Rank order of the real rows gives one process's batch of W x B: the SSL validation loss
    sees the same global batches (less the padded tail) on any number of processes."""
    single = evaluation(37, 16, world=1)[0]
    for whole, *parts in zip(single, *evaluation(37, 8, world=2), strict=True):
        assert np.array_equal(np.concatenate([p.indices[: p.real] for p in parts]), whole.indices)


def test_reader_marks_the_real_rows_with_plain_ints():
    """Python ints reach the step (no tensor): slicing `x[:real]` then needs no device sync."""
    source = SyntheticSource(num_samples=7, image_size=8, channels=1, num_classes=2, seed=0)
    sampler = BatchIndexSampler(np.arange(7), 4, False, seed=0, rank=0, world_size=2)
    (batch,) = DataLoader(BatchReader(source), sampler=sampler, batch_size=None)
    # rank 0 of 2 reads 3 of the 7 samples, padded to the 4 of rank 1
    assert (batch["real"], batch["real_on_all_ranks"], len(batch["image"])) == (3, 3, 4)
    assert type(batch["real"]) is int and type(batch["real_on_all_ranks"]) is int
