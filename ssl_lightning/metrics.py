"""torchmetrics collections for classification (accuracy, ROC-AUC) and regression (MAE, RMSE)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
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
    """MAE and RMSE, updated with predictions already in the target's own units."""
    return MetricCollection(
        {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}, prefix=prefix
    )
