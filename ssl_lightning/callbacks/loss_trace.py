"""LossTrace: the first step's training loss and the last epoch's mean, for results.json."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from ssl_lightning.methods.training_module import TrainingModule


class LossTrace(Callback):
    """Remembers the training loss of the first step and the mean over the last epoch (of every
    step, not only of the logged ones), as the training module reports it. The losses stay on
    the device until the epoch ends: reading each one on the host would make a GPU wait every
    step."""

    def __init__(self) -> None:
        self._first: Tensor | None = None
        self._epoch_sum: Tensor | None = None
        self._epoch_steps = 0
        self.last_epoch_mean: float | None = None

    @property
    def first(self) -> float | None:
        """The first step's loss (read once, after training)."""
        return None if self._first is None else float(self._first)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_sum, self._epoch_steps = None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        value = TrainingModule.reported_loss(outputs).double()
        if self._first is None:
            self._first = value
        self._epoch_sum = value if self._epoch_sum is None else self._epoch_sum + value
        self._epoch_steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_steps:
            self.last_epoch_mean = float(self._epoch_sum) / self._epoch_steps
