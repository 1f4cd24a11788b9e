"""What a probe learns: classification of the labels or regression of one target field.

A task decides the head's width, the target it reads from a batch, the loss, the prediction in
the target's own terms, the metrics, the validation metric that picks the best checkpoint, and
the figures drawn after the test. The probe itself only trains a head on a backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from ssl_lightning.data.needs import TargetScaling
from ssl_lightning.errors import UserError
from ssl_lightning.metrics import class_scores, classification_metrics, regression_metrics
from ssl_lightning.plots import plot_pca, plot_regression, plot_roc


class ProbeTask(nn.Module, ABC):
    """The task-specific half of a probe; an nn.Module so its state (target scaling) is saved."""

    checkpoint_metric: str
    checkpoint_mode: str  # min | max
    target_scaling: TargetScaling | None  # fitted by the data module, if the task has one

    @property
    @abstractmethod
    def outputs(self) -> int:
        """Width of the head's output."""

    @abstractmethod
    def target(self, batch: dict) -> Tensor:
        """What the head is trained to predict, read from a batch."""

    @abstractmethod
    def loss(self, out: Tensor, target: Tensor) -> Tensor: ...

    @abstractmethod
    def prediction(self, out: Tensor) -> Tensor:
        """The head's output as the metrics and figures take it."""

    @abstractmethod
    def metrics(self, prefix: str) -> MetricCollection: ...

    @abstractmethod
    def figures(self, columns: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
        """Figures of the test split from its `features`, `prediction` and `label` columns."""


class Classification(ProbeTask):
    """The dataset's labels; cross entropy; accuracy and ROC-AUC; best by validation ROC-AUC."""

    checkpoint_metric = "val/auroc"
    checkpoint_mode = "max"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.target_scaling = None

    @property
    def outputs(self) -> int:
        return self.num_classes

    def target(self, batch: dict) -> Tensor:
        return batch["y"]

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out, target)

    def prediction(self, out: Tensor) -> Tensor:
        """Class scores: P(class 1) for two classes, the softmax otherwise."""
        return class_scores(out)

    def metrics(self, prefix: str) -> MetricCollection:
        return classification_metrics(self.num_classes, prefix)

    def figures(self, columns: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
        return [
            plot_roc(columns["prediction"], columns["label"], out_dir / "roc_test.png"),
            plot_pca(
                columns["features"], columns["label"], True, "class", out_dir / "pca_test.png"
            ),
        ]


class Regression(ProbeTask):
    """One target field, trained standardised (MSE) with the labelled training subset's
    statistics, reported in its own units (MAE, RMSE, resolution); best by validation MAE."""

    checkpoint_metric = "val/mae"
    checkpoint_mode = "min"

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target_scaling = TargetScaling(target)

    @property
    def outputs(self) -> int:
        return 1

    def target(self, batch: dict) -> Tensor:
        return batch["targets"][self.target_scaling.target].float()

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(out.squeeze(1), self.target_scaling.standardise(target))

    def prediction(self, out: Tensor) -> Tensor:
        """The output back in the target's units."""
        return self.target_scaling.restore(out.squeeze(1).float())

    def metrics(self, prefix: str) -> MetricCollection:
        return regression_metrics(prefix)

    def figures(self, columns: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
        name = self.target_scaling.target
        prediction, label = columns["prediction"], columns["label"]
        return [
            plot_regression(prediction, label, name, out_dir / f"{name}_test.png"),
            plot_pca(columns["features"], label, False, name, out_dir / "pca_test.png"),
        ]


TASKS = ("classification", "regression")


def probe_task(task: str, target: str | None, num_classes: int | None) -> ProbeTask:
    """The task named by `method.task`, or a one-line UserError saying what it lacks."""
    if task == "classification":
        if not num_classes:
            raise UserError("method.task=classification needs a labelled dataset (no labels found)")
        return Classification(num_classes)
    if task == "regression":
        if not target:
            raise UserError(
                "method.task=regression needs method.target=<field>, e.g. method.target=m0"
            )
        return Regression(target)
    raise UserError(f"method.task={task!r} is not one of {', '.join(TASKS)}")
