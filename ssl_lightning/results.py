"""What a run leaves behind besides checkpoints: results.json with its provenance, and the summary
printed at the end."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import Tensor

from ssl_lightning.atomic_files import write_text_atomically

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


def scalar_metrics(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """Logged metrics as plain floats, sorted by name."""
    return {name: float(value) for name, value in sorted(metrics.items())}


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write results.json atomically (a crash never leaves half a file)."""
    write_text_atomically(path, json.dumps(results, indent=2, sort_keys=True) + "\n")


def print_summary(results: dict[str, Any], checkpoint_metric: str) -> None:
    """A few lines a person reads at the end of a run."""
    console = Console()
    metrics = results["metrics"]
    console.rule(f"{results['method']} on {results['dataset']} — {results['duration_s']:.0f} s")
    if results["train_loss_first_step"] is not None:
        console.print(
            f"train loss: {results['train_loss_first_step']:.4f} (first step) -> "
            f"{results['train_loss_last_epoch']:.4f} (last epoch mean)"
        )
    shown = [k for k in metrics if k.startswith(("val/online_", "test/")) or k == checkpoint_metric]
    for key in shown:
        console.print(f"{key}: {metrics[key]:.4f}")
    console.print(f"checkpoint: {results['checkpoints']['last']}")
    console.print(f"results:    {Path(results['run_dir']) / 'results.json'}")
