"""Whole-batch reading: one sampler yields index arrays, one dataset reads a batch per call.

Reading a batch in one call (one HDF5 read, one numpy gather) instead of per sample keeps the
loader far ahead of a small model. The sampler also decides which rank sees which samples: rank r
takes the r-th slice of each global batch of one shared permutation, so a DDP run over W ranks
with batch B sees exactly the batches of one process with batch W*B.

Evaluation reads every sample exactly once, so that metrics do not depend on W: the last,
incomplete global batch is shared out evenly and padded to equal shapes on every rank (the SSL
losses gather rows across ranks), and each batch says how many of its leading rows are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ssl_lightning.data.sources.base import ImageSource


class IndexBatch(NamedTuple):
    """A rank's batch of sample indices: only its first `real` rows are its samples; the rest
    (in the last evaluation batch) repeat one so that every rank's batch has the same shape. The
    first `real_on_all_ranks` rows are real on every rank: what a statistic of the gathered global
    batch can use without counting a sample twice."""

    indices: np.ndarray
    real: int
    real_on_all_ranks: int

    @classmethod
    def whole(cls, indices: np.ndarray) -> IndexBatch:
        """A batch without padding (training, single-process reading)."""
        return cls(indices, len(indices), len(indices))


class BatchIndexSampler(Sampler[np.ndarray | IndexBatch]):
    """Yields this rank's batches: training index arrays follow a (seed, epoch) permutation;
    evaluation `IndexBatch`es keep the given order and cover every sample once over all ranks."""

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already taken in it)

    def start_at(self, epoch: int, batches: int) -> None:
        """Resume mid-epoch: the next pass is `epoch` without its first `batches` batches, which
        the checkpointed run trained on (a finished epoch resumes at the next one)."""
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.epoch, self._resume = epoch, (epoch, batches)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start so every epoch has its own order."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:  # training: full global batches only (equal work on every rank)
            return len(self.indices) // (self.batch_size * self.world_size)
        return -(-len(self.indices) // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[np.ndarray | IndexBatch]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
            global_batch = self.batch_size * self.world_size
            start = self.rank * self.batch_size
            resume, self._resume = self._resume, None
            skip = resume[1] if resume is not None and resume[0] == self.epoch else 0
            for b in range(skip, len(self)):
                chunk = order[b * global_batch + start : b * global_batch + start + self.batch_size]
                yield self.indices[chunk]
            return
        yield from self._evaluation_batches()

    def _evaluation_batches(self) -> Iterator[IndexBatch]:
        """Rank r takes the r-th of W near-equal slices of each global batch of the given order:
        a full one splits as in training; the last, incomplete one gives each rank floor or ceil
        of its size / W samples, the smaller shares padded with copies of one sample, so every
        rank runs as many batches as the others, of the same shapes."""
        world, rank = self.world_size, self.rank
        global_batch = self.batch_size * world
        for start in range(0, len(self.indices), global_batch):
            chunk = self.indices[start : start + global_batch]
            size = len(chunk)
            mine = chunk[size * rank // world : size * (rank + 1) // world]
            padding = np.full(-(-size // world) - len(mine), chunk[0])
            yield IndexBatch(np.concatenate([mine, padding]), len(mine), size // world)


class BatchReader(Dataset):
    """`reader[index_array or IndexBatch]` -> one batch dict: image, index, optional y, regression
    targets, and the Python ints `real` and `real_on_all_ranks` of `IndexBatch` (every row for a
    plain array): ints slice the real rows off on the device without a host-device sync."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(
        self, item: np.ndarray | IndexBatch
    ) -> dict[str, Tensor | int | dict[str, Tensor]]:
        indices, real, real_on_all_ranks = (
            item if isinstance(item, IndexBatch) else IndexBatch.whole(item)
        )
        batch: dict[str, Tensor | int | dict[str, Tensor]] = {
            "image": torch.from_numpy(self.source.read(indices)),
            "index": torch.from_numpy(np.asarray(indices, dtype=np.int64)),
            "targets": {
                name: torch.from_numpy(values[indices])
                for name, values in self.source.targets.items()
            },
            "real": real,
            "real_on_all_ranks": real_on_all_ranks,
        }
        labels = self.source.labels
        if labels is not None:
            batch["y"] = torch.from_numpy(labels[indices])
        return batch
