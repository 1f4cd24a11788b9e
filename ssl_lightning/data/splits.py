"""Deterministic train/val/test splits and nested, stratified labelled subsets.

Physicists compare runs across seeds and label fractions, so the split depends only on the
dataset and `split_seed` (never on the run seed), and the 1% labelled subset is contained in the
10% one: every class is permuted once and each fraction takes a prefix of that permutation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.errors import UserError

SPLITS = ("train", "val", "test")


def make_split(
    num_samples: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Shuffle 0..N-1 with `seed` and cut it into sorted train/val/test index arrays."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"dataset.val_fraction={val_fraction} and dataset.test_fraction={test_fraction} must "
            "each lie in [0, 1) and sum to less than 1"
        )
    perm = np.random.default_rng(seed).permutation(num_samples)
    n_val = round(num_samples * val_fraction)
    n_test = round(num_samples * test_fraction)
    return {
        "val": np.sort(perm[:n_val]),
        "test": np.sort(perm[n_val : n_val + n_test]),
        "train": np.sort(perm[n_val + n_test :]),
    }


def labelled_subset(
    indices: np.ndarray,
    labels: np.ndarray | None,
    fraction: float,
    seed: int,
    min_per_class: int = 1,
) -> np.ndarray:
    """A stratified, nested subset of `indices` holding `fraction` of each class, and at least
    `min_per_class` of each (all of a smaller class): nesting holds as every size is a prefix."""
    if not 0 < fraction <= 1:
        raise UserError(f"dataset.label_fraction={fraction} must lie in (0, 1], e.g. 0.01 for 1%")
    if fraction == 1:
        return indices
    rng = np.random.default_rng(seed)
    groups = (
        [indices]
        if labels is None
        else [indices[labels[indices] == c] for c in np.unique(labels[indices])]
    )
    chosen = []
    for group in groups:
        order = rng.permutation(len(group))
        chosen.append(group[order[: max(min_per_class, math.ceil(fraction * len(group)))]])
    return np.sort(np.concatenate(chosen))


def save_split(split: dict[str, np.ndarray], path: Path, fingerprint: str) -> None:
    """Write the split next to the run so it can be audited and reused; atomically, as other
    ranks may read it while rank 0 writes it."""
    with replaced_atomically(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, fingerprint=np.array(fingerprint), **split)


def load_split(path: Path, fingerprint: str) -> dict[str, np.ndarray]:
    """Read a saved split, refusing one that was made for other data."""
    with np.load(path) as saved:
        if str(saved["fingerprint"]) != fingerprint:
            raise UserError(
                f"{path} was made for other data (fingerprint {saved['fingerprint']} != "
                f"{fingerprint}): delete it or run in a fresh output folder"
            )
        return {name: saved[name] for name in SPLITS}
