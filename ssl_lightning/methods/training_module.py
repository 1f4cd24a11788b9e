"""TrainingModule: the LightningModule base of the SSL methods and the probe.

It owns what every trainable module shares: the optimizer with a batch-scaled LR and warm-up +
cosine schedule, the NaN guard, the step-logging cadence, and the declared needs of the data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.data.needs import DataNeeds
from ssl_lightning.errors import UserError
from ssl_lightning.optim import build_optimizer, warmup_cosine, warmup_length

REFERENCE_BATCH = 256  # LR = base LR x global batch / 256 (Goyal et al.; SimCLR, Barlow Twins)
_REPORTED_LOSS = "reported_loss"  # step output: the method's loss without auxiliary terms


class TrainingModule(L.LightningModule, ABC):
    """Base of SSL methods and the probe. Subclasses list their parameter groups, the data they
    need, and the validation metric that picks the best checkpoint."""

    checkpoint_metric: str
    checkpoint_mode: str  # min | max
    # True when some trainable parameters get no gradient in some steps (LP-FT's linear phase):
    # DDP must then look for them every step instead of waiting for their gradients forever
    idle_parameters: bool = False

    def __init__(
        self, optimizer: dict[str, Any], scheduler: dict[str, Any], batch_size: int
    ) -> None:
        super().__init__()
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler)
        self.batch_size = batch_size
        # the first non-finite loss as (step, epoch, value), step -1 until there is one; a plain
        # attribute, not a buffer: DDP would broadcast a buffer every step
        self._nonfinite: Tensor | None = None

    @property
    @abstractmethod
    def data_needs(self) -> DataNeeds:
        """What the data module must emit for this module (views, labelled subset, scaling)."""

    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: `params` plus `lr_scale` (x the scaled LR) or a fixed `lr`, and
        optionally `weight_decay` and `lars` (False: plain SGD step for biases, norms, probes)."""

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all processes and accumulation steps."""
        return self.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    @property
    def scaled_lr(self) -> float:
        base = self.optimizer_cfg["lr"]
        if self.optimizer_cfg["scale_lr"]:
            return base * self.global_batch / REFERENCE_BATCH
        return base

    def configure_optimizers(self) -> dict[str, Any]:
        lr = self.scaled_lr
        groups = []
        for group in self.param_groups():
            group = dict(group)
            if "lr_scale" in group:
                group["lr"] = lr * group.pop("lr_scale")
            groups.append(group)
        optimizer = build_optimizer(self.optimizer_cfg["name"], groups, lr, self.optimizer_cfg)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        schedule = partial(
            warmup_cosine,
            warmup_steps=warmup_length(self.scheduler_cfg["warmup_epochs"], total, epochs),
            total_steps=total,
            final_factor=self.scheduler_cfg["final_factor"],
        )
        scheduler = LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_hyperparams({"global_batch": self.global_batch, "lr_scaled": self.scaled_lr})

    @property
    def step_is_logged(self) -> bool:
        """Whether values logged in this training step reach the loggers: Lightning writes step
        values every log_every_n_steps (counting the step about to finish, as here). Each
        self.log costs measurable bookkeeping on a small network (docs/results/), so step
        metrics are made and logged on those steps only."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    @staticmethod
    def step_output(loss: Tensor, total: Tensor | None = None) -> dict[str, Tensor]:
        """What a training step returns: `total` (the loss to optimise, default `loss`) for
        Lightning, and `loss` alone, detached, for `reported_loss`."""
        return {"loss": loss if total is None else total, _REPORTED_LOSS: loss.detach()}

    @staticmethod
    def reported_loss(outputs: dict[str, Tensor]) -> Tensor:
        """The method's own loss of a step (auxiliary terms such as an online probe's excluded),
        as `step_output` made it: what callbacks trace every step. A tensor on the device:
        reading it on the host each step would make a GPU wait."""
        return outputs[_REPORTED_LOSS]

    def check_finite(self, loss: Tensor) -> None:
        """Stop at the first NaN/inf loss, naming its step; the last good checkpoint stays.

        Reading the loss on the host would make a GPU wait every step, so the first non-finite
        loss is recorded on the device and read where the host waits anyway or must: on logged
        steps, before validation, at the end of a training epoch (Lightning calls this module's
        hook before ModelCheckpoint's, a monitoring callback's) and before any checkpoint is
        written (`on_save_checkpoint`: signal checkpoints too). Steps after a non-finite loss may
        run until then, but no checkpoint ever holds weights they touched.
        """
        value = loss.detach().double()
        if self._nonfinite is None or self._nonfinite.device != value.device:
            self._nonfinite = value.new_full((3,), -1.0)
        now = torch.stack(
            [value.new_full((), self.global_step), value.new_full((), self.current_epoch), value]
        )
        first = value.isfinite().logical_not_() & (self._nonfinite[0] < 0)
        self._nonfinite = torch.where(first, now, self._nonfinite)
        if self.step_is_logged:
            self._stop_if_nonfinite()

    def _stop_if_nonfinite(self) -> None:
        """Raises check_finite's error if it recorded a non-finite loss (a read on the host)."""
        if self._nonfinite is None:
            return
        step, epoch, value = self._nonfinite.tolist()
        if step < 0:
            return
        folder = getattr(self.trainer.checkpoint_callback, "dirpath", None)
        saved = Path(folder, "last.ckpt") if folder else None
        last = saved if saved and saved.is_file() else "none saved yet"
        raise UserError(
            f"non-finite loss ({value}) at epoch {int(epoch)}, step {int(step)}: training "
            f"stopped; last good checkpoint: {last} — lower method.optimizer.lr or check the "
            "data for NaN/inf"
        )

    def on_validation_start(self) -> None:
        self._stop_if_nonfinite()

    def on_train_epoch_end(self) -> None:
        self._stop_if_nonfinite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stop_if_nonfinite()
