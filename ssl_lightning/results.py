"""What a run leaves behind besides checkpoints: results.json with its provenance, and the summary
logged at the end."""

from __future__ import annotations

import json
import logging
import math
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_lightning.atomic_files import write_text_atomically

REPO_ROOT = Path(__file__).resolve().parents[1]


log = logging.getLogger(__name__)
RULE_WIDTH = 80  # the summary's title line


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
    """Write results.json atomically (a crash never leaves half a file). An undefined metric
    (NaN, e.g. ROC-AUC of one class) is written as null: JSON has no NaN, and readers choke on
    Python's bare `NaN`."""
    text = json.dumps(_defined(results), indent=2, sort_keys=True, allow_nan=False)
    write_text_atomically(path, text + "\n")


def _defined(value: Any) -> Any:
    """`value` with every non-finite float inside it replaced by None."""
    if isinstance(value, dict):
        return {key: _defined(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_defined(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def log_summary(results: dict[str, Any], checkpoint_metric: str) -> None:
    """A few lines a person reads at the end of a run: logged, so that the run's log file keeps
    them too (the terminal shows them plain: conf/hydra/job_logging/run_log.yaml)."""
    metrics = results["metrics"]
    title = f" {results['method']} on {results['dataset']} — {results['duration_s']:.0f} s "
    lines = [title.center(RULE_WIDTH, "─")]
    if results["train_loss_first_step"] is not None:
        lines.append(
            f"train loss: {results['train_loss_first_step']:.4f} (first step) -> "
            f"{results['train_loss_last_epoch']:.4f} (last epoch mean)"
        )
    shown = [k for k in metrics if k.startswith(("val/online_", "test/")) or k == checkpoint_metric]
    lines += [
        f"{key}: {metrics[key]:.4f}" if math.isfinite(metrics[key]) else f"{key}: undefined"
        for key in shown
    ]
    lines.append(f"checkpoint: {results['checkpoints']['last']}")
    lines.append(f"results:    {Path(results['run_dir']) / 'results.json'}")
    for line in lines:
        log.info(line)
