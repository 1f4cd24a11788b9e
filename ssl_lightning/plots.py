"""Figures of a probe's test results: ROC curve, predicted vs true, PCA map of the embeddings.

Each function takes numpy arrays and a PNG path and returns the path. Figures are built with
`matplotlib.figure.Figure` (Agg canvas), not pyplot: no global backend switch, no figure registry
to leak from a long training process, safe on a headless cluster node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

MAX_POINTS = 10_000  # scatter plots draw a seeded sample: a picture, not a statistic
DPI = 120


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """ROC curve with its AUC in the legend: scores [N] = P(class 1) for two classes, or [N, K]
    class probabilities (one one-vs-rest curve per class)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    columns = {1: scores} if scores.ndim == 1 else dict(enumerate(scores.T))
    for cls, column in columns.items():
        fpr, tpr, _ = roc_curve(labels == cls, column)
        name = "" if scores.ndim == 1 else f"class {cls} vs rest, "
        ax.plot(fpr, tpr, label=f"{name}AUC = {auc(fpr, tpr):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_regression(predicted: np.ndarray, true: np.ndarray, name: str, path: Path) -> Path:
    """Predicted against true values in the target's units, with the diagonal and the MAE."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    shown = _sample(len(true))
    ax.scatter(true[shown], predicted[shown], s=4, alpha=0.4, rasterized=True)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle=":")
    mae = float(np.abs(predicted - true).mean())
    ax.set(
        xlabel=f"true {name}",
        ylabel=f"predicted {name}",
        title=f"{name} (test split): MAE {mae:.4g}",
    )
    return _save(fig, path)


def plot_pca(
    features: np.ndarray, colour: np.ndarray, categorical: bool, name: str, path: Path
) -> Path:
    """The embeddings on their first two principal components, coloured by class or by a
    continuous target `name`; axis labels give the variance each component explains."""
    centred = features - features.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ components[:2].T
    explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
    shown = _sample(len(coords))
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    if categorical:
        for cls in np.unique(colour):
            mask = shown[colour[shown] == cls]
            ax.scatter(*coords[mask].T, s=4, alpha=0.5, label=f"{name} {cls}", rasterized=True)
        ax.legend(markerscale=3)
    else:
        points = ax.scatter(
            *coords[shown].T, c=colour[shown], s=4, alpha=0.6, cmap="viridis", rasterized=True
        )
        fig.colorbar(points, ax=ax, label=name)
    ax.set(
        xlabel=f"PC 1 ({explained[0]:.0%} of variance)",
        ylabel=f"PC 2 ({explained[1]:.0%} of variance)",
        title="backbone embeddings (test split)",
    )
    return _save(fig, path)


def _sample(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS points, the same every call."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
