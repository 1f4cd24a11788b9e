"""ViewsDataModule: splits a source, reads whole batches, and makes views on the device.

Views are made after the batch reaches the device (`on_after_batch_transfer`), batched, with
per-sample random parameters keyed by (seed, epoch, sample index, view): on a GPU this removes the
CPU augmentation bottleneck, and the draws do not depend on the rank or the batch composition.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_lightning.data.batching import BatchIndexSampler, BatchReader
from ssl_lightning.data.needs import DataNeeds
from ssl_lightning.data.preprocess import Preprocess
from ssl_lightning.data.random_keys import sample_keys
from ssl_lightning.data.sources.base import ImageSource
from ssl_lightning.data.splits import labelled_subset, load_split, make_split, save_split
from ssl_lightning.errors import UserError

log = logging.getLogger(__name__)

STATS_SAMPLE = 4096  # train images used for the scaling statistics
STATS_BATCH_BYTES = 32 << 20  # float32 images read at a time for them: 67 jets of 8 x 125 x 125
# A probe's validation split shrinks with its label fraction (with 1% of the labels there is no
# full labelled validation set either), but keeps at least this many samples of each class, so
# the ROC-AUC that picks the best checkpoint is defined and does not rest on one or two samples.
MIN_VAL_PER_CLASS = 5
ZERO_CHECK_SAMPLE = 64  # training images, spread over the split, read to tell all-zero data


class ViewsDataModule(L.LightningDataModule):
    """Emits batches with the clean normalised image `x` and, when the training module needs
    views, the augmented `views` ([views * N, C, H, W], view-major); SSL training batches carry
    no `x`. What the module needs is declared in `needs` (see `data.needs`)."""

    def __init__(
        self,
        source: ImageSource,
        needs: DataNeeds,
        augment: nn.Module,
        channels: int,
        num_classes: int | None,
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        label_fraction: float,
        preprocess: dict,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        prefetch_factor: int,
        pin_memory: bool,
        channels_last: bool,
        seed: int,
        split_file: str | None,
    ) -> None:
        super().__init__()
        if not 0 < label_fraction <= 1:
            raise UserError(
                f"dataset.label_fraction={label_fraction} must lie in (0, 1], e.g. 0.01 for 1%"
            )
        self.source = source
        self.needs = needs
        self.augment = augment
        self.channels = channels
        self.declared_classes = num_classes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.label_fraction = label_fraction
        self.preprocess = Preprocess(channels=channels, **preprocess)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.seed = seed
        self.split_file = Path(split_file) if split_file else None
        self.split: dict[str, np.ndarray] = {}
        self.train_position = (0, 0)  # (epoch, batches the training step took in it)

    # --- metadata the methods need before fit -------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        labels = self.source.labels
        return None if labels is None else int(labels.max()) + 1

    def prepare_data(self) -> None:
        """Rank 0 only: one-time work such as generating or converting the data."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.split:
            return
        self._check_channels()
        self._check_labels()
        fingerprint = self.source.fingerprint()
        if self.split_file is not None and self.split_file.exists():
            self.split = load_split(self.split_file, fingerprint)
        else:
            self.split = make_split(
                len(self.source), self.val_fraction, self.test_fraction, self.split_seed
            )
            if self.split_file is not None and self._is_rank_zero():
                save_split(self.split, self.split_file, fingerprint)
        self._check_not_all_zero()
        if self.preprocess.needs_statistics:
            self.preprocess.fit(self._train_sample())
        scaling = self.needs.target_scaling
        if scaling is not None:
            values = [self._labelled_train_values(name) for name in scaling.targets]
            scaling.fit(np.stack(values, axis=1))

    def _is_rank_zero(self) -> bool:
        return self.trainer is None or self.trainer.global_rank == 0

    def _check_channels(self) -> None:
        found = self.source.image_shape[0]
        if found != self.channels:
            raise UserError(
                f"the data has {found} channels but dataset.channels={self.channels} (the "
                f"backbone's in_channels follows it): set dataset.channels={found}"
            )

    def _check_labels(self) -> None:
        """Class ids must lie in 0..dataset.num_classes-1: a larger one would index past the
        classifier's outputs deep inside the loss (under DDP, a traceback from every rank)."""
        labels = self.source.labels
        if labels is None or self.declared_classes is None or len(labels) == 0:
            return
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.declared_classes:
            raise UserError(
                f"the data's class ids run from {low} to {high} but dataset.num_classes="
                f"{self.declared_classes} allows 0..{self.declared_classes - 1}: set "
                f"dataset.num_classes={high + 1}, or fix the labels (dataset.source)"
            )

    def _check_not_all_zero(self) -> None:
        """Images that are all zero (a threshold above every pixel, an empty image key) train
        without an error and teach nothing: refused before any step."""
        train = self.split["train"]
        if not len(train):
            return  # no training data: train_dataloader says so
        picks = np.unique(np.linspace(0, len(train) - 1, ZERO_CHECK_SAMPLE).astype(np.int64))
        images = torch.from_numpy(self.source.read(train[picks]))
        if not bool(self.preprocess.suppress(images).any()):
            raise UserError(
                f"all training images are zero after zero-suppression ({len(picks)} sampled "
                "across the training split, no pixel at or above dataset.preprocess."
                f"zero_suppress={self.preprocess.zero_suppress}): lower the threshold, or check "
                "that dataset.source points at the images"
            )

    def _train_sample(self) -> Iterator[Tensor]:
        """A seeded sample of training images, read STATS_BATCH_BYTES at a time: statistics
        never see validation or test data, and their memory does not grow with the sample."""
        train = self.split["train"]
        rng = np.random.default_rng(self.split_seed)
        sample = np.sort(rng.choice(train, size=min(len(train), STATS_SAMPLE), replace=False))
        per_batch = max(1, STATS_BATCH_BYTES // (4 * math.prod(self.source.image_shape)))
        for start in range(0, len(sample), per_batch):
            yield torch.from_numpy(self.source.read(sample[start : start + per_batch]))

    def train_indices(self, labelled: bool) -> np.ndarray:
        """SSL pretraining uses the whole train split; supervised runs its labelled subset."""
        train = self.split["train"]
        if not labelled:
            return train
        return labelled_subset(train, self.source.labels, self.label_fraction, self.split_seed)

    def val_indices(self, labelled: bool) -> np.ndarray:
        """SSL runs validate on the whole val split; supervised runs on the same label fraction of
        it (stratified, nested, seeded like the training subset, >= MIN_VAL_PER_CLASS a class):
        model selection then uses no more labels than the run claims."""
        val = self.split["val"]
        if not labelled:
            return val
        return labelled_subset(
            val, self.source.labels, self.label_fraction, self.split_seed, MIN_VAL_PER_CLASS
        )

    def _labelled_train_values(self, name: str) -> np.ndarray:
        """A regression target's values over the labelled training subset."""
        targets = self.source.targets
        if name not in targets:
            known = ", ".join(targets) or "none"
            raise UserError(
                f"regression target {name!r} not in the dataset (has: {known}): "
                "set method.target to one of them"
            )
        return targets[name][self.train_indices(labelled=True)]

    # --- the position in the training data, saved with every checkpoint -----------------------
    def state_dict(self) -> dict[str, list[int]]:
        """Lightning stores this in each checkpoint and hands it to `load_state_dict` before the
        loaders are made, so a run stopped mid-epoch (a signal, a time limit) continues with its
        next batch instead of replaying the epoch. (Lightning's own loader-state route is not
        used: it never reaches a loader made early to count the stepping batches.)"""
        return {"train_position": list(self.train_position)}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        epoch, batches = state["train_position"]
        self.train_position = (epoch, batches)

    def _count_training_batch(self) -> None:
        """Count a batch as it reaches the training step (the loader runs ahead, prefetching)."""
        epoch, taken = self.train_position
        current = self.trainer.current_epoch
        self.train_position = (current, taken + 1 if epoch == current else 1)

    # --- loaders ------------------------------------------------------------------------------
    def _loader(self, indices: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        sampler = BatchIndexSampler(indices, batch_size, shuffle, self.seed, rank, world)
        return DataLoader(
            BatchReader(self.source),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,  # per worker
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        labelled = self.needs.labelled
        indices = self.train_indices(labelled)
        world = self.trainer.world_size if self.trainer else 1
        what = f"label_fraction {self.label_fraction} of " if labelled else ""
        batch_size = self.batch_size
        if labelled and world <= len(indices) < batch_size * world:
            # few labels (1% of them, say): a probe's batch is the labelled set itself
            batch_size = len(indices) // world
            if self._is_rank_zero():
                log.info(
                    f"method.batch_size={self.batch_size} x {world} process(es) is more than the "
                    f"{len(indices)} labelled training samples ({what}"
                    f"{len(self.split['train'])}): training on batches of {batch_size} instead"
                )
        if len(indices) < batch_size * world:
            raise UserError(
                f"method.batch_size={self.batch_size} x {world} process(es) is larger than the "
                f"{len(indices)} training samples ({what}{len(self.split['train'])}): lower "
                "method.batch_size or use more data"
            )
        loader = self._loader(indices, batch_size, shuffle=True)
        loader.sampler.start_at(*self.train_position)
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            self.val_indices(self.needs.labelled), self.eval_batch_size, shuffle=False
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split["test"], self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # --- on the device: clean images and views -------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        raw = batch.pop("image").contiguous(memory_format=self.memory_format)
        image = self.preprocess.suppress(raw)
        views = self.needs.views
        training = bool(self.trainer and self.trainer.training)
        if training:
            self._count_training_batch()
        if not (views and training):  # SSL training steps read the views only
            batch["x"] = self.preprocess.scale(image)
        if views:
            batch["views"] = self.preprocess.scale(self._views(image, batch["index"], views))
        return batch

    def _views(self, image: Tensor, index: Tensor, views: int) -> Tensor:
        """All views of the batch from one augmentation call, view-major: [views * N, ...],
        which the backbone takes as it is (no concatenation)."""
        # evaluation views use epoch 0 every time, so the validation loss is comparable
        epoch = self.trainer.current_epoch if self.trainer.training else 0
        view = torch.arange(views * len(index), device=index.device) // len(index)
        keys = sample_keys(self.seed, epoch, index.repeat(views), view)
        return self.augment(image, keys)

    def evaluation_batches(
        self, indices: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> Iterator[dict]:
        """Batches of `indices` in order, on `device`, for reading outside the training loop
        (monitors, figures, ssl-embed): `image` (raw after zero-suppression, physical units), `x`
        (preprocessed, in `dtype`), `index`, `y`, `targets`. No views: they cost an augmentation
        pass each and are not needed to embed a sample."""
        reader = BatchReader(self.source)
        for start in range(0, len(indices), self.eval_batch_size):
            batch = move_data_to_device(
                reader[indices[start : start + self.eval_batch_size]], device
            )
            batch["image"] = self.preprocess.suppress(batch["image"])
            # the model's own dtype: outside a training step no precision plugin converts the input
            batch["x"] = self.preprocess.scale(batch["image"]).to(dtype)
            yield batch
