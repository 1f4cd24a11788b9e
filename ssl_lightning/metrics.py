"""torchmetrics collections: accuracy and ROC-AUC; MAE, RMSE and relative resolution, per target
when there are several; the mean of a loss over samples."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
)
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers.abstract import WrapperMetric

log = logging.getLogger(__name__)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy and ROC-AUC; binary AUC for two classes (quark vs gluon), macro OvR otherwise."""
    if num_classes == 2:
        metrics = {"acc": BinaryAccuracy(), "auroc": DefinedBinaryAUROC()}
    else:
        metrics = {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "auroc": DefinedMulticlassAUROC(num_classes),
        }
    return MetricCollection(metrics, prefix=prefix)


class DefinedBinaryAUROC(BinaryAUROC):
    """ROC-AUC, NaN where it is undefined: samples of one class only. (torchmetrics returns 0.0
    there, which reads as a model that ranks every sample the wrong way round.)"""

    def compute(self) -> Tensor:
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or bool(target.min() == target.max()):
            return undefined_auroc()
        return super().compute()


class DefinedMulticlassAUROC(MulticlassAUROC):
    """Macro one-vs-rest ROC-AUC over the classes it is defined for (present, beside others);
    NaN for samples of one class only. (torchmetrics averages an absent class in as 0.0.)"""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes=num_classes, average=None)

    def compute(self) -> Tensor:
        counts = torch.bincount(dim_zero_cat(self.target), minlength=self.num_classes)
        defined = (counts > 0) & (counts < counts.sum())
        if not bool(defined.any()):
            return undefined_auroc()
        with warnings.catch_warnings():  # torchmetrics' warning for the classes left out here
            warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
            return super().compute()[defined].mean()


def undefined_auroc() -> Tensor:
    """NaN, said once per process: the summary shows it as undefined, not as a score."""
    _say_undefined()
    return torch.tensor(float("nan"))


@functools.cache
def _say_undefined() -> None:
    log.warning("ROC-AUC undefined: the evaluated samples hold one class only; logged as NaN")


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


class TargetColumn(WrapperMetric):
    """`metric` of one column of [N, targets] predictions and targets: a MetricCollection hands
    every metric the same tensors, so each target's MAE, RMSE and resolution read their own
    column. The wrapped metric keeps (and syncs across processes) the state."""

    def __init__(self, metric: Metric, column: int) -> None:
        super().__init__()
        self.metric = metric
        self.column = column

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self.metric.update(prediction[:, self.column], target[:, self.column])

    def compute(self) -> Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()


class StandardisedMAE(Metric):
    """Mean absolute error of standardised predictions against standardised targets over all
    targets of [N, targets] values: the mean over targets of MAE / that target's std, since every
    target has N values. `standardise` maps values in the targets' units to standardised ones."""

    full_state_update = False

    def __init__(self, standardise: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.standardise = standardise
        for name in ("total", "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, target: Tensor) -> None:
        error = self.standardise(prediction.double()) - self.standardise(target.double())
        self.total += error.abs().sum()
        self.count += error.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()
