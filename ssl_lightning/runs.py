"""What a run leaves behind besides checkpoints: results.json, provenance, the printed summary."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[1]


PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "torchmetrics", "wandb", "numpy")


def provenance(dataset_fingerprint: str) -> dict[str, Any]:
    """What makes a run reproducible besides its config: code commit, package versions, data."""
    return {
        "git_commit": git_commit(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "dataset_fingerprint": dataset_fingerprint,
    }


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' for uncommitted changes), if in a checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


class LossTrace(Callback):
    """Remembers the training loss of the first step and the mean over the last epoch (of every
    step, not only of the logged ones)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.epoch_values: list[float] = []
        self.last_epoch_mean: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        # every step's loss as the step returned it: `train_loss` where the returned `loss`
        # also holds other terms (the SSL methods' online probe), else `loss`
        value = float(outputs.get("train_loss", outputs["loss"]))
        if self.first is None:
            self.first = value
        self.epoch_values.append(value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch_values:
            self.last_epoch_mean = sum(self.epoch_values) / len(self.epoch_values)


def scalar_metrics(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """Logged metrics as plain floats, sorted by name."""
    return {name: float(value) for name, value in sorted(metrics.items())}


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write results.json atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
