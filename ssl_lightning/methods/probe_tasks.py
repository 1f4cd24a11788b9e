"""What a probe learns: classification of the labels or regression of one or several target fields.

A task decides the head's width, the target it reads from a batch, the loss, the prediction in
the target's own terms, the metrics, the validation metric that picks the best checkpoint, and
the figures drawn after the test. The probe itself only trains a head on a backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from ssl_lightning.data.needs import TargetScaling
from ssl_lightning.errors import UserError
from ssl_lightning.metrics import (
    StandardisedMAE,
    TargetColumn,
    class_scores,
    classification_metrics,
    regression_metrics,
)
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
    def has_truth(self, batch: dict) -> bool:
        """Whether the batch carries what `target` reads: data without it (new, unlabelled
        files) can still be scored, but not measured."""

    @abstractmethod
    def loss(self, out: Tensor, target: Tensor) -> Tensor: ...

    @abstractmethod
    def prediction(self, out: Tensor) -> Tensor:
        """The head's output as the metrics and figures take it."""

    @abstractmethod
    def prediction_columns(self, prediction: Tensor) -> dict[str, Tensor]:
        """`prediction` as named per-sample columns of a predictions file (ssl-eval)."""

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

    def has_truth(self, batch: dict) -> bool:
        """Labels are there; labels beyond the head's classes are refused, not scored."""
        if "y" not in batch:
            return False
        if int(batch["y"].max()) >= self.num_classes:
            raise UserError(
                f"the data has labels up to {int(batch['y'].max())} but the probe predicts "
                f"{self.num_classes} classes: score data with the probe's classes"
            )
        return True

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out, target)

    def prediction(self, out: Tensor) -> Tensor:
        """Class scores: P(class 1) for two classes, the softmax otherwise."""
        return class_scores(out)

    def prediction_columns(self, prediction: Tensor) -> dict[str, Tensor]:
        return {"prediction": prediction}

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
    """Target fields, each trained standardised with the labelled training subset's statistics
    (MSE), reported in its own units (MAE, RMSE, resolution).

    Several targets share one head, one output each, and the loss is the mean over targets of
    their standardised MSEs, so each counts the same whatever its units. One target is picked
    best by validation MAE and its metrics keep their plain names (`val/mae`); several get
    `val/mae_<target>` etc. and are picked best by `val/mae_scaled`, the mean over targets of
    MAE / train-split std: MAEs in GeV and in counts cannot be added, a plain sum would let the
    target with the widest spread choose, and the scaled MAE is measured in the units the loss
    is trained in.
    """

    checkpoint_mode = "min"

    def __init__(self, targets: str | Sequence[str]) -> None:
        super().__init__()
        self.target_scaling = TargetScaling(targets)
        self.names = self.target_scaling.targets
        self.checkpoint_metric = "val/mae" if len(self.names) == 1 else "val/mae_scaled"

    @property
    def outputs(self) -> int:
        return len(self.names)

    def target(self, batch: dict) -> Tensor:
        """[N, targets] in the targets' units."""
        return torch.stack([batch["targets"][name] for name in self.names], dim=1).float()

    def has_truth(self, batch: dict) -> bool:
        return all(name in batch["targets"] for name in self.names)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean over the N x targets standardised squared errors: with N values per target,
        the mean over targets of each target's MSE."""
        return F.mse_loss(out, self.target_scaling.standardise(target))

    def prediction(self, out: Tensor) -> Tensor:
        """The outputs back in the targets' units, [N, targets]."""
        return self.target_scaling.restore(out.float())

    def prediction_columns(self, prediction: Tensor) -> dict[str, Tensor]:
        return {f"prediction_{name}": prediction[:, i] for i, name in enumerate(self.names)}

    def metrics(self, prefix: str) -> MetricCollection:
        if len(self.names) == 1:
            return regression_metrics(prefix)
        metrics = {
            f"{key}_{name}": TargetColumn(metric, column)
            for column, name in enumerate(self.names)
            for key, metric in regression_metrics("").items()
        }
        metrics["mae_scaled"] = StandardisedMAE(self.target_scaling.standardise)
        return MetricCollection(metrics, prefix=prefix)

    def figures(self, columns: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
        """Predicted vs true for each target; the PCA map coloured by the first."""
        prediction, label = columns["prediction"], columns["label"]
        paths = [
            plot_regression(prediction[:, i], label[:, i], name, out_dir / f"{name}_test.png")
            for i, name in enumerate(self.names)
        ]
        first = self.names[0]
        paths.append(
            plot_pca(columns["features"], label[:, 0], False, first, out_dir / "pca_test.png")
        )
        return paths


TASKS = ("classification", "regression")


def probe_task(task: str, target: str | Sequence[str] | None, num_classes: int | None) -> ProbeTask:
    """The task named by `method.task`, or a one-line UserError saying what it lacks."""
    if task == "classification":
        if not num_classes:
            raise UserError("method.task=classification needs a labelled dataset (no labels found)")
        return Classification(num_classes)
    if task == "regression":
        if not target:
            raise UserError(
                "method.task=regression needs method.target=<field> or [<field>,...], e.g. "
                "method.target=m0 or method.target=[m0,pt]"
            )
        if not isinstance(target, str) and len(set(target)) != len(target):
            raise UserError(f"method.target={list(target)} names a target twice: list each once")
        return Regression(target)
    raise UserError(f"method.task={task!r} is not one of {', '.join(TASKS)}")
