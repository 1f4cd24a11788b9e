"""RepresentationMonitor: what the features of an SSL run are worth, while it pretrains.

It reads its samples itself (`ViewsDataModule.evaluation_batches`: clean images, no views) from
the data module's saved split instead of collecting what the steps saw, so the numbers do not
depend on batch order or on how DDP shards the data. Under DDP only rank 0 computes and logs
(`rank_zero_only=True`): the other ranks wait for it at the next collective, which costs the same
wall time as computing everywhere and reads the data once. Such metrics cannot pick the best
checkpoint (Lightning's rule for rank-zero-only logs).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from ssl_lightning.data.datamodule import ViewsDataModule
from ssl_lightning.diagnostics import (
    effective_rank,
    knn_predict,
    normalised_std,
    ridge_r2,
    std_ratio,
)
from ssl_lightning.errors import UserError


class RepresentationMonitor(Callback):
    """kNN accuracy, collapse diagnostics and the count-shortcut R² every `every_n_epochs`.

    Bank: a seeded sample (at most `max_samples`, the same every time, so epochs compare) of the
    labelled training samples; queries: a sample of the validation split. kNN, effective rank and
    the shortcut fit use backbone features (what a probe gets); the normalised std uses the
    projector output, as the loss sees it: backbone features after ReLU and max-pooling are
    non-negative, so their normalised std cannot reach 1/sqrt(d) even when healthy. The shortcut
    quantity is the dataset's `shortcut_target` (jets: constituent multiplicity `nconst`) when it
    has one, else the number of non-empty pixels of the zero-suppressed raw image (counted before
    standardisation, which makes empty pixels non-zero).
    """

    def __init__(
        self,
        every_n_epochs: int,
        knn_k: int,
        knn_temperature: float,
        max_samples: int,
        ridge_alpha: float,
        shortcut_target: str,
    ) -> None:
        for name, value, ok in (
            ("every_n_epochs", every_n_epochs, every_n_epochs >= 1),
            ("knn_k", knn_k, knn_k >= 1),
            ("knn_temperature", knn_temperature, knn_temperature > 0),
            ("max_samples", max_samples, max_samples >= 1),
            ("ridge_alpha", ridge_alpha, ridge_alpha >= 0),
        ):
            if not ok:
                raise UserError(
                    f"callbacks.representation.{name}={value} is out of range: set a positive value"
                )
        self.every_n_epochs = every_n_epochs
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.max_samples = max_samples
        self.ridge_alpha = ridge_alpha
        self.shortcut_target = shortcut_target

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        due = epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs
        if trainer.sanity_checking or not due or not trainer.is_global_zero:
            return
        for name, value in self.compute(pl_module, trainer.datamodule).items():
            pl_module.log(name, value, rank_zero_only=True)

    def compute(
        self, pl_module: L.LightningModule, datamodule: ViewsDataModule
    ) -> dict[str, float]:
        """All diagnostics on the current weights; kNN only for labelled data, the shortcut R²
        only when the count varies."""
        bank = self._embed(pl_module, datamodule, datamodule.train_indices(labelled=True))
        val = self._embed(pl_module, datamodule, datamodule.split["val"])
        metrics = {
            "val/embed_std": float(normalised_std(val["z"]).mean()),
            "val/embed_std_ratio": float(std_ratio(val["z"])),
            "val/effective_rank": float(effective_rank(val["features"])),
        }
        if "y" in bank:
            scores = knn_predict(
                bank["features"],
                bank["y"],
                val["features"],
                self.knn_k,
                self.knn_temperature,
                datamodule.num_classes,
            )
            metrics["val/knn_acc"] = float((scores.argmax(dim=1) == val["y"]).float().mean())
            if scores.shape[1] == 2:
                metrics["val/knn_auroc"] = float(binary_auroc(scores[:, 1], val["y"]))
        if bank["count"].std() > 0 and val["count"].std() > 0:
            metrics["val/shortcut_r2"] = ridge_r2(
                bank["features"], bank["count"], val["features"], val["count"], self.ridge_alpha
            )
        return metrics

    @torch.no_grad()
    def _embed(
        self, pl_module: L.LightningModule, datamodule: ViewsDataModule, indices: np.ndarray
    ) -> dict[str, Tensor]:
        """Features, projections, count and labels of a seeded sample of `indices`."""
        if len(indices) > self.max_samples:
            rng = np.random.default_rng(datamodule.split_seed)
            indices = np.sort(rng.choice(indices, self.max_samples, replace=False))
        projector = getattr(pl_module, "projector", None)
        parts: dict[str, list[Tensor]] = {}
        for batch in datamodule.evaluation_batches(indices, pl_module.device, pl_module.dtype):
            features = pl_module.backbone(batch["x"])
            columns = {
                "features": features.float(),
                "z": (features if projector is None else projector(features)).float(),
                "count": batch["targets"][self.shortcut_target].float()
                if self.shortcut_target in batch["targets"]
                else (batch["image"] > 0).any(dim=1).sum(dim=(1, 2)).float(),
            }
            if "y" in batch:
                columns["y"] = batch["y"]
            for name, values in columns.items():
                parts.setdefault(name, []).append(values)
        return {name: torch.cat(values) for name, values in parts.items()}
