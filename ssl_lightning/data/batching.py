"""Whole-batch reading: one sampler yields index arrays, one dataset reads a batch per call.

Reading a batch in one call (one HDF5 read, one numpy gather) instead of per sample keeps the
loader far ahead of a small model. The sampler also decides which rank sees which samples: rank r
takes the r-th slice of each global batch of one shared permutation, so a DDP run over W ranks
with batch B sees exactly the batches of one process with batch W*B.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ssl_lightning.data.sources.base import ImageSource


class BatchIndexSampler(Sampler[np.ndarray]):
    """Yields this rank's index arrays; training batches follow a (seed, epoch) permutation."""

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

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start so every epoch has its own order."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:  # training: full global batches only (equal work on every rank)
            return len(self.indices) // (self.batch_size * self.world_size)
        per_rank = -(-len(self.indices) // self.world_size)
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
            global_batch = self.batch_size * self.world_size
            start = self.rank * self.batch_size
            for b in range(len(self)):
                chunk = order[b * global_batch + start : b * global_batch + start + self.batch_size]
                yield self.indices[chunk]
            return
        # evaluation: every rank gets an equal share (padded by wrapping, like DistributedSampler)
        per_rank = -(-len(self.indices) // self.world_size)
        padded = np.resize(self.indices, per_rank * self.world_size)
        mine = padded[self.rank :: self.world_size]
        for b in range(len(self)):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]


class BatchReader(Dataset):
    """`reader[index_array]` -> one batch dict: image, index, optional y, regression targets."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: np.ndarray) -> dict[str, Tensor | dict[str, Tensor]]:
        batch: dict[str, Tensor | dict[str, Tensor]] = {
            "image": torch.from_numpy(np.ascontiguousarray(self.source.read(indices))),
            "index": torch.from_numpy(np.asarray(indices, dtype=np.int64)),
            "targets": {
                name: torch.from_numpy(values[indices])
                for name, values in self.source.targets.items()
            },
        }
        labels = self.source.labels
        if labels is not None:
            batch["y"] = torch.from_numpy(labels[indices])
        return batch
