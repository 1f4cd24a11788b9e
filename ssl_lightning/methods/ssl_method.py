"""SSLMethod: backbone + projector + loss, with an online linear probe and collapse diagnostics.

A concrete method (SimCLR, Barlow Twins) only names its loss; the two views come from the data
module, both go through the network in one forward, and the online probe learns from detached
features of the first view so it monitors the representation without shaping it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.data.needs import DataNeeds
from ssl_lightning.diagnostics import std_ratio
from ssl_lightning.methods.training_module import TrainingModule
from ssl_lightning.metrics import class_scores, classification_metrics
from ssl_lightning.models.backbones import build_backbone
from ssl_lightning.models.heads import linear_head, mlp
from ssl_lightning.optim import split_decay_groups

VIEWS = 2  # both losses compare two views of each sample


class SSLMethod(TrainingModule):
    """Shared training/validation logic of the self-supervised methods."""

    def __init__(
        self,
        backbone: dict[str, Any],
        projector: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        batch_size: int,
        online_probe_lr: float,
        num_classes: int | None,
        checkpoint_metric: str,
        checkpoint_mode: str,
    ) -> None:
        super().__init__(optimizer, scheduler, batch_size)
        self.save_hyperparameters()
        self.checkpoint_metric, self.checkpoint_mode = checkpoint_metric, checkpoint_mode
        self.backbone = build_backbone(backbone)
        self.projector = mlp(self.backbone.out_dim, **projector)
        self.online_probe = linear_head(self.backbone.out_dim, num_classes) if num_classes else None
        if num_classes:
            self.val_probe_metrics = classification_metrics(num_classes, "val/online_")

    @property
    def data_needs(self) -> DataNeeds:
        """Two views of every training sample; pretraining never reads labels it trains on."""
        return DataNeeds(views=VIEWS, labelled=False, target_scaling=None)

    @abstractmethod
    def ssl_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """The method's loss on the two views' projections."""

    def param_groups(self) -> list[dict[str, Any]]:
        decay, no_decay = split_decay_groups(nn.ModuleList([self.backbone, self.projector]))
        groups = [
            {"params": decay, "lr_scale": 1.0},
            {"params": no_decay, "lr_scale": 1.0, "weight_decay": 0.0, "lars": False},
        ]
        if self.online_probe is not None:
            groups.append(
                {
                    "params": list(self.online_probe.parameters()),
                    "lr": self.hparams.online_probe_lr,
                    "weight_decay": 0.0,
                    "lars": False,
                }
            )
        return groups

    def embed(self, views: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Features of view 1, and projections of both views, from one forward pass of the
        view-major batch [2N, C, H, W]."""
        n = len(views) // VIEWS
        features = self.backbone(views)
        z = self.projector(features)
        return features[:n], z[:n], z[n:]

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        features, z1, z2 = self.embed(batch["views"])
        loss = self.ssl_loss(z1, z2)
        self.check_finite(loss)
        written = self.step_is_logged
        if written:
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/z_std", std_ratio(z1.detach()))
        total = loss
        if self.online_probe is not None and "y" in batch:
            probe_loss = F.cross_entropy(self.online_probe(features.detach()), batch["y"])
            if written:
                self.log("train/online_loss", probe_loss)
            total = loss + probe_loss
        return self.step_output(loss, total)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """`val/loss` is, like the training loss, a statistic of the global batch (the rows of
        every rank): the mean over the validation epoch's global batches, weighted by their
        sizes. The loss gathers equal shapes from every rank, so a DDP run's last, padded batch
        enters with the rows real on all ranks only (fewer than W real samples left out, no
        padding counted). The online probe's metrics count every real sample once."""
        _, z1, z2 = self.embed(batch["views"])
        shared = batch["real_on_all_ranks"]  # the same on every rank: all of them log, or none
        if shared:
            loss = self.ssl_loss(z1[:shared], z2[:shared])
            self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=shared)
        if self.online_probe is not None and "y" in batch:
            real = batch["real"]
            if real:
                clean = self.backbone(batch["x"][:real])
                scores = class_scores(self.online_probe(clean))
                self.val_probe_metrics.update(scores, batch["y"][:real])
            self.log_dict(self.val_probe_metrics, prog_bar=True)
