"""`ssl-eval`: score a trained checkpoint on a dataset split: per-sample predictions and metrics.

    ssl-eval --checkpoint outputs/probe/<run>/checkpoints/best.ckpt --out preds.h5
    ssl-eval --checkpoint ... --out preds.csv --split all --dataset qg_e2e dataset.source.path=...

How a physicist applies a model to new files. A probe checkpoint is scored by its head (class
scores, or regression outputs in the targets' units); an SSL checkpoint by its online linear probe
(when it was pretrained on labelled data) and by a weighted kNN classifier (k and temperature of
the run's representation monitor) whose bank is the labelled training split of the data scored:
the run's own on its own data, the new data's on new labelled data. Samples that are themselves
in the bank get no kNN score (NaN), since each would find itself. The file holds each sample's
dataset `index`, its labels/targets and the predictions; the metrics, named `<split>/<metric>`
as a run logs them (a probe's `test/...` on its own test split reproduce its results.json), go
to `<out stem>.metrics.json` beside it and are printed. Data without the truth is scored, not
measured. Bad input ends in one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_lightning.atomic_files import write_text_atomically
from ssl_lightning.diagnostics import knn_predict
from ssl_lightning.embed import add_data_arguments
from ssl_lightning.embeddings import (
    CHOICES,
    CheckpointData,
    check_format,
    embed_checkpoint,
    embed_indices,
    pick_device,
    write_arrays,
)
from ssl_lightning.errors import UserError
from ssl_lightning.methods.probe import Probe
from ssl_lightning.metrics import class_scores, classification_metrics
from ssl_lightning.models.backbones import read_checkpoint
from ssl_lightning.models.heads import linear_head

FORMATS = (".h5", ".hdf5", ".csv")
FIX = "pass --checkpoint <run_dir>/checkpoints/best.ckpt (a probe) or last.ckpt (pretraining)"


@dataclass
class Scores:
    """Per-sample columns (`index`, truth, predictions) and metrics of one scored split."""

    columns: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def score_checkpoint(
    checkpoint: str | Path,
    split: str,
    out: Path,
    config: str | Path | None = None,
    dataset: str | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> tuple[Scores, CheckpointData, str]:
    """Scores of a probe or SSL checkpoint on a split of its data or of another dataset, the
    data scored, and the checkpoint's kind (`probe` | `ssl`)."""
    checkpoint = Path(checkpoint).expanduser()
    embedded, data = embed_checkpoint(checkpoint, split, out, config, dataset, overrides, device)
    _, state = read_checkpoint(checkpoint, "checkpoint", FIX)
    if any(key.startswith("head.") for key in state):
        probe = Probe.load_from_checkpoint(checkpoint, map_location="cpu", pretrained=None)
        return score_probe(probe.eval(), embedded, data, split), data, "probe"
    if any(key.startswith("projector.") for key in state):
        labelled = data.datamodule.train_indices(labelled=True)
        bank = embed_indices(data.backbone, data.datamodule, labelled, pick_device(device))
        return score_ssl(state, embedded, bank, data, split), data, "ssl"
    raise UserError(f"{checkpoint} holds neither a probe head nor an SSL projector — {FIX}")


def truth(embedded: dict[str, np.ndarray], data: CheckpointData) -> dict:
    """The labels and targets of embedded samples, laid out as a batch carries them."""
    batch = {
        "targets": {
            name: torch.from_numpy(embedded[name]) for name in data.datamodule.source.targets
        }
    }
    if "y" in embedded:
        batch["y"] = torch.from_numpy(embedded["y"])
    return batch


def base_columns(embedded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What every predictions file holds: the dataset index and the truth, no embeddings."""
    return {name: values for name, values in embedded.items() if name != "embeddings"}


@torch.no_grad()
def score_probe(
    probe: Probe, embedded: dict[str, np.ndarray], data: CheckpointData, split: str
) -> Scores:
    """The probe's head on the backbone features; its task's metrics and loss where the data
    holds the truth, as the probe's own test computes them."""
    out = probe.head(torch.from_numpy(embedded["embeddings"]))
    task, batch = probe.task, truth(embedded, data)
    prediction = task.prediction(out)
    scores = Scores(base_columns(embedded))
    scores.columns.update({k: v.numpy() for k, v in task.prediction_columns(prediction).items()})
    if not task.has_truth(batch):
        scores.notes.append(f"{data.cfg.dataset.name} lacks what the probe predicts: no metrics")
        return scores
    target = task.target(batch)
    metrics = task.metrics(f"{split}/")
    metrics.update(prediction, target)
    scores.metrics = {name: float(value) for name, value in metrics.compute().items()}
    scores.metrics[f"{split}/loss"] = float(task.loss(out, target))
    return scores


@torch.no_grad()
def score_ssl(
    state: dict[str, Tensor],
    embedded: dict[str, np.ndarray],
    bank: dict[str, np.ndarray],
    data: CheckpointData,
    split: str,
) -> Scores:
    """The online probe's class scores (when the checkpoint has one for the data's classes) and
    weighted-kNN class scores against the labelled training split of the data scored."""
    scores = Scores(base_columns(embedded))
    features = torch.from_numpy(embedded["embeddings"])
    num_classes = data.datamodule.num_classes
    labels = torch.from_numpy(embedded["y"]) if "y" in embedded else None
    online = {
        k.removeprefix("online_probe."): v
        for k, v in state.items()
        if k.startswith("online_probe.")
    }
    classes = online["1.weight"].shape[0] if online else None
    if classes is not None and (num_classes is None or num_classes <= classes):
        head = linear_head(features.shape[1], classes)
        head.load_state_dict(online)
        online_scores = class_scores(head.eval()(features))
        scores.columns["online_score"] = online_scores.numpy()
        if labels is not None:
            scores.metrics.update(measure(online_scores, labels, classes, f"{split}/online_"))
    else:
        scores.notes.append("no online probe for these classes (pretrained without them)")
    if labels is None:
        if "online_score" not in scores.columns:
            raise UserError(
                f"nothing to score: the checkpoint has no online probe and dataset "
                f"{data.cfg.dataset.name} no labels for a kNN; ssl-embed writes its features"
            )
        scores.notes.append(f"{data.cfg.dataset.name} has no labels: no kNN scores")
        return scores
    query = ~np.isin(embedded["index"], bank["index"])
    if not query.any():
        scores.notes.append("every sample is in the kNN bank (the training split): no kNN scores")
        return scores
    monitor = data.cfg.callbacks.representation
    votes = knn_predict(
        torch.from_numpy(bank["embeddings"]),
        torch.from_numpy(bank["y"]),
        features[query],
        monitor.knn_k,
        monitor.knn_temperature,
        num_classes,
    )
    knn = votes[:, 1] if num_classes == 2 else votes
    column = np.full((len(query), *knn.shape[1:]), np.nan, dtype=np.float32)
    column[query] = knn.numpy()
    scores.columns["knn_score"] = column
    scores.metrics.update(measure(knn, labels[query], num_classes, f"{split}/knn_"))
    if not query.all():
        scores.notes.append(
            f"kNN scores and metrics cover the {int(query.sum())} samples outside the bank"
        )
    return scores


def measure(class_score: Tensor, labels: Tensor, num_classes: int, prefix: str) -> dict[str, float]:
    """Accuracy and ROC-AUC of class scores, as the runs log them."""
    metrics = classification_metrics(num_classes, prefix)
    metrics.update(class_score, labels)
    return {name: float(value) for name, value in metrics.compute().items()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssl-eval",
        description="Score a probe or SSL checkpoint on a dataset split: per-sample predictions "
        "with dataset indices and truth, and metrics (<out stem>.metrics.json).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="best.ckpt or last.ckpt")
    parser.add_argument("--split", default="test", choices=CHOICES)
    parser.add_argument("--out", required=True, type=Path, help="FILE.h5 or FILE.csv")
    add_data_arguments(parser)
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `ssl-eval`: bad input ends in one line on stderr and exit status 2."""
    args = parse_args(argv)
    metrics_file = args.out.with_name(f"{args.out.stem}.metrics.json")
    try:
        check_format(args.out, FORMATS)
        scores, data, kind = score_checkpoint(
            args.checkpoint,
            args.split,
            args.out,
            args.config,
            args.dataset,
            args.overrides,
            args.device,
        )
        record = {
            "checkpoint": str(args.checkpoint),
            "kind": kind,
            "dataset": data.cfg.dataset.name,
            "split": args.split,
            "split_file": str(data.split_file),
            "samples": len(scores.columns["index"]),
            "predictions": str(args.out),
            "metrics": scores.metrics,
            "notes": scores.notes,
        }
        write_arrays(scores.columns, args.out)
        write_text_atomically(metrics_file, json.dumps(record, indent=2) + "\n")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{kind} checkpoint on {record['dataset']} {args.split}: {record['samples']} samples")
    for name, value in scores.metrics.items():
        print(f"{name}: {value:.4f}")
    for note in scores.notes:
        print(f"note: {note}")
    print(f"predictions -> {args.out}\nmetrics     -> {metrics_file}")


if __name__ == "__main__":
    main()
