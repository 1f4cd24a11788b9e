"""Label-free physics baselines: one jet observable used directly as the quark/gluon score.

Gluon jets radiate more, so they have more constituents and light up more pixels; any learned
tagger should beat these counts. Each observable's direction (which end is quark-like) is chosen
on the training split, so the test split only measures.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from ssl_lightning.data.sources.base import ImageSource

CHUNK = 2048  # images read at a time when counting pixels


def oriented_auc(
    train_scores: np.ndarray, train_labels: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> float:
    """ROC-AUC of `scores` for class 1, flipped if the training split says low means class 1."""
    sign = 1.0 if roc_auc_score(train_labels, train_scores) >= 0.5 else -1.0
    return float(roc_auc_score(labels, sign * scores))


def nonempty_pixels(source: ImageSource, indices: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels of each image with a deposit at or above `threshold` in any channel."""
    counts = [
        (source.read(chunk) >= threshold).any(axis=1).sum(axis=(1, 2))
        for chunk in np.array_split(indices, max(1, -(-len(indices) // CHUNK)))
    ]
    return np.concatenate(counts).astype(np.float64)


def baseline_aucs(
    source: ImageSource,
    split: dict[str, np.ndarray],
    count_target: str,
    pixel_threshold: float,
) -> dict[str, float]:
    """Test ROC-AUC of the constituent multiplicity and of the non-empty-pixel count."""
    labels = source.labels
    train, test = split["train"], split["test"]
    multiplicity = source.targets[count_target].astype(np.float64)
    pixels = {
        name: nonempty_pixels(source, split[name], pixel_threshold) for name in ("train", "test")
    }
    return {
        count_target: oriented_auc(
            multiplicity[train], labels[train], multiplicity[test], labels[test]
        ),
        "nonempty_pixels": oriented_auc(
            pixels["train"], labels[train], pixels["test"], labels[test]
        ),
    }
