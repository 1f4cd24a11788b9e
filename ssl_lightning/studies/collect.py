"""Collect the probe jobs' results.json into rows, mean +- std over seeds, a CSV and Markdown.

Pure functions over lists of dicts (only `load_results` reads files), so the collection is
tested on fake results. A job's settings come from the `study_job` node of its saved Hydra config.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_lightning.studies.plan import model_label

KEYS = ("task", "target", "model", "fraction", "seed")


def load_results(probes_dir: Path) -> list[dict[str, Any]]:
    """Every finished job under `probes_dir`: its results.json plus `job` (its study_job dict)."""
    found = []
    for path in sorted(probes_dir.rglob("results.json")):
        result = json.loads(path.read_text())
        config = OmegaConf.load(path.parent / ".hydra" / "config.yaml")
        result["job"] = OmegaConf.to_container(config.study_job)
        found.append(result)
    return found


def result_rows(results: Iterable[dict[str, Any]], metrics: Iterable[str]) -> list[dict[str, Any]]:
    """One row per job: its task, target, model, fraction, seed and the chosen test metrics."""
    metrics = list(metrics)
    rows = []
    for result in results:
        job = result["job"]
        row = {
            "task": job["task"],
            "target": job["target"],
            "model": model_label(job),
            "fraction": float(job["fraction"]),
            "seed": int(job["seed"]),
        }
        row.update({m: result["metrics"][m] for m in metrics if m in result["metrics"]})
        rows.append(row)
    return sorted(rows, key=lambda r: tuple(str(r[k]) if k == "target" else r[k] for k in KEYS))


def summarise(rows: list[dict[str, Any]], metrics: Iterable[str]) -> list[dict[str, Any]]:
    """Mean and sample std (0 for a single seed) of each metric per task, model and fraction."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["model"], row["fraction"]), []).append(row)
    summary = []
    for (task, model, fraction), members in groups.items():
        for metric in metrics:
            values = [m[metric] for m in members if metric in m]
            if not values:
                continue
            summary.append(
                {
                    "task": task,
                    "model": model,
                    "fraction": fraction,
                    "metric": metric,
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
            )
    return summary


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The per-job rows as CSV (columns: the job keys, then every metric any row has)."""
    columns = list(KEYS) + sorted({k for row in rows for k in row} - set(KEYS))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_tables(summary: list[dict[str, Any]], baselines: dict[str, float]) -> str:
    """One table per (task, metric): models as rows, label fractions as columns, mean +- std;
    then the label-free baselines' test ROC-AUC."""
    lines = []
    for task, metric in dict.fromkeys((s["task"], s["metric"]) for s in summary):
        cells = {
            (s["model"], s["fraction"]): s
            for s in summary
            if (s["task"], s["metric"]) == (task, metric)
        }
        fractions = sorted({f for _, f in cells})
        models = sorted({m for m, _ in cells})
        lines += [f"### {task}: {metric}", ""]
        lines.append("| model | " + " | ".join(f"{f:g}" for f in fractions) + " |")
        lines.append("|---|" + "---|" * len(fractions))
        for model in models:
            row = [
                f"{cells[model, f]['mean']:.4f} ± {cells[model, f]['std']:.4f}"
                if (model, f) in cells
                else "—"
                for f in fractions
            ]
            lines.append(f"| {model} | " + " | ".join(row) + " |")
        lines.append("")
    if baselines:
        lines += ["### label-free baselines: test/auroc (no training)", ""]
        lines += ["| observable | test/auroc |", "|---|---|"]
        lines += [f"| {name} | {auc:.4f} |" for name, auc in baselines.items()]
        lines.append("")
    return "\n".join(lines)
