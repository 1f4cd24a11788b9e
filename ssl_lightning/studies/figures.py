"""The study's plots: each metric against the label fraction, one line per model, seed spread
as error bars, and the label-free baselines as horizontal lines on the ROC-AUC plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def plot_metric(
    summary: list[dict[str, Any]],
    task: str,
    metric: str,
    baselines: dict[str, float],
    path: Path,
) -> Path:
    """`metric` vs label fraction (log axis) for `task`; returns the PNG's path."""
    chosen = [s for s in summary if s["task"] == task and s["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model in sorted({s["model"] for s in chosen}):
        points = sorted((s for s in chosen if s["model"] == model), key=lambda s: s["fraction"])
        ax.errorbar(
            [p["fraction"] for p in points],
            [p["mean"] for p in points],
            yerr=[p["std"] for p in points],
            marker="o",
            capsize=3,
            label=model,
        )
    if metric.endswith("auroc"):
        for i, (name, auc) in enumerate(baselines.items()):
            ax.axhline(
                auc, color="grey", linestyle=("--", ":", "-.")[i % 3], label=f"{name} (no training)"
            )
    ax.set_xscale("log")
    fractions = sorted({s["fraction"] for s in chosen})
    ax.set_xticks(fractions, labels=[f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("label fraction")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_study(
    summary: list[dict[str, Any]], baselines: dict[str, float], out_dir: Path
) -> list[Path]:
    """One PNG per (task, metric) in `out_dir`."""
    pairs = dict.fromkeys((s["task"], s["metric"]) for s in summary)
    return [
        plot_metric(
            summary, task, metric, baselines, out_dir / f"{task}_{metric.replace('/', '_')}.png"
        )
        for task, metric in pairs
    ]
