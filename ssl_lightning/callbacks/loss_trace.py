"""LossTrace: the first step's training loss and the last epoch's mean, for results.json."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from ssl_lightning.methods.training_module import TrainingModule


class LossTrace(Callback):
    """Remembers the training loss of the first step and the mean over the last epoch (of every
    step, not only of the logged ones), as the training module reports it."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.epoch_values: list[float] = []
        self.last_epoch_mean: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        value = TrainingModule.reported_loss(outputs)
        if self.first is None:
            self.first = value
        self.epoch_values.append(value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch_values:
            self.last_epoch_mean = sum(self.epoch_values) / len(self.epoch_values)
