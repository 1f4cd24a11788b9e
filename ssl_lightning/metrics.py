"""torchmetrics collections: accuracy and ROC-AUC; MAE, RMSE and relative resolution; the mean
of a loss over samples."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy and ROC-AUC; binary AUC for two classes (quark vs gluon), macro OvR otherwise."""
    if num_classes == 2:
        metrics = {"acc": BinaryAccuracy(), "auroc": BinaryAUROC()}
    else:
        metrics = {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "auroc": MulticlassAUROC(num_classes=num_classes),
        }
    return MetricCollection(metrics, prefix=prefix)


def class_scores(logits: Tensor) -> Tensor:
    """What the metrics take: P(class 1) for two classes, the softmax otherwise."""
    probs = logits.float().softmax(dim=-1)
    return probs[:, 1] if probs.shape[1] == 2 else probs


def regression_metrics(prefix: str) -> MetricCollection:
    """MAE, RMSE and relative resolution, updated with predictions in the target's own units."""
    return MetricCollection(
        {
            "mae": MeanAbsoluteError(),
            "rmse": MeanSquaredError(squared=False),
            "resolution": RelativeResolution(),
        },
        prefix=prefix,
    )


class RelativeResolution(Metric):
    """std of (prediction - true) / true: the relative resolution physicists quote for a jet-mass
    or energy regression (a constant bias does not count, a spread does). For positive targets;
    accumulated as sums in float64 so it is exact over batches and processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("count", "total", "squares"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, target: Tensor) -> None:
        relative = (prediction.double() - target.double()) / target.double()
        self.count += relative.numel()
        self.total += relative.sum()
        self.squares += relative.square().sum()

    def compute(self) -> Tensor:
        mean = self.total / self.count
        return (self.squares / self.count - mean.square()).clamp_min(0).sqrt().float()


class SampleMean(Metric):
    """The mean over samples of a per-batch mean such as a loss, from the batch means weighted by
    their sample counts: exact over batches and processes of any sizes, where a mean over ranks
    of their means is not. Float64 sums; no NaN check, so no host-device sync per update."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("total", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, batch_mean: Tensor, count: int) -> None:
        self.total += batch_mean.double() * count
        self.count += count

    def compute(self) -> Tensor:
        return (self.total / self.count).float()
