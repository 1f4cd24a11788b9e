"""Probe figures: PNGs written, the ROC's AUC is sklearn's, and ProbePlots logs them to W&B."""

from __future__ import annotations

import re

import lightning as L
import numpy as np
import pytest
import wandb
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from ssl_lightning.callbacks.probe_plots import ProbePlots
from ssl_lightning.loggers import wandb_logger
from ssl_lightning.plots import plot_pca, plot_regression, plot_roc
from ssl_lightning.train import build, build_datamodule
from tests.conftest import FAST
from tests.helpers import compose_run
from tests.wandb_offline import offline_run_file, read_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved_figures(monkeypatch) -> list[Figure]:
    """Every Figure the plot functions save, for reading back the text they drew."""
    figures: list[Figure] = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def legend_aucs(fig: Figure) -> list[float]:
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    return [float(m.group(1)) for t in texts if (m := re.search(r"AUC = ([0-9.]+)", t))]


def test_binary_roc_shows_sklearns_auc(tmp_path, saved_figures):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(0.3 * labels + rng.normal(0.35, 0.25, 500), 0, 1)
    path = plot_roc(scores, labels, tmp_path / "roc.png")
    assert is_png(path)
    assert legend_aucs(saved_figures[-1]) == [round(roc_auc_score(labels, scores), 4)]


def test_multiclass_roc_shows_one_vs_rest_aucs(tmp_path, saved_figures):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3)) + np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert is_png(plot_roc(probs, labels, tmp_path / "roc.png"))
    expected = [round(roc_auc_score(labels == k, probs[:, k]), 4) for k in range(3)]
    assert legend_aucs(saved_figures[-1]) == expected


def test_regression_plot_is_in_target_units(tmp_path, saved_figures):
    rng = np.random.default_rng(2)
    true = rng.uniform(10, 90, 300)
    predicted = true + rng.normal(0, 2, 300)
    assert is_png(plot_regression(predicted, true, "m0", tmp_path / "m0.png"))
    ax = saved_figures[-1].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("true m0", "predicted m0")
    assert f"MAE {np.abs(predicted - true).mean():.4g}" in ax.get_title()


def test_pca_map_reports_the_dominant_direction(tmp_path, saved_figures):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    features = rng.normal(size=(400, 8)) * 0.1
    features[:, 3] += 10 * labels  # the classes differ along one direction
    assert is_png(plot_pca(features, labels, True, "class", tmp_path / "pca.png"))
    ax = saved_figures[-1].axes[0]
    explained = int(re.search(r"\((\d+)% of variance\)", ax.get_xlabel()).group(1))
    assert explained >= 95
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0", "class 1"]
    assert is_png(plot_pca(features, features[:, 3], False, "pt", tmp_path / "pca_pt.png"))


@pytest.mark.parametrize(
    ("task", "figures"),
    [
        (["method.task=classification"], ("roc_test", "pca_test")),
        (["method.task=regression", "method.target=size"], ("size_test", "pca_test")),
    ],
    ids=["classification", "regression"],
)
def test_probe_plots_after_test_are_written_and_logged_to_wandb(tmp_path, task, figures):
    cfg = compose_run(
        [*FAST, "method=probe", "method.mode=scratch", "logger=none", *task], tmp_path
    )
    model = build(
        OmegaConf.to_container(cfg.method, resolve=True), _recursive_=False, _convert_="all"
    )
    datamodule = build_datamodule(cfg, tmp_path, model.data_needs)
    logger = wandb_logger("ssl-lightning-test", None, "offline", str(tmp_path), [])
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=[ProbePlots(str(tmp_path / "plots"))],
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    logger.experiment.finish()
    wandb.teardown()  # finish() can return before the service has written the offline run file
    logged = {k: v for row in read_history(offline_run_file(tmp_path)) for k, v in row.items()}
    for name in figures:
        assert is_png(tmp_path / "plots" / f"{name}.png"), name
        # W&B stores an image as nested fields
        assert logged[f"plots/{name}/_type"] == "images/separated", name
        assert logged[f"plots/{name}/count"] == 1
