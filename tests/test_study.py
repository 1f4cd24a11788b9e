"""Label-efficiency study: job plan and skip-finished, baselines, collection on fake results."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_lightning.studies.baselines import nonempty_pixels, oriented_auc
from ssl_lightning.studies.collect import (
    load_results,
    markdown_tables,
    result_rows,
    summarise,
    write_csv,
)
from ssl_lightning.studies.figures import plot_study
from ssl_lightning.studies.plan import (
    JOB_OVERRIDES,
    pending,
    plan_jobs,
    probe_budget,
    sweep_value,
)
from tests.helpers import compose_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = {
    "classification": {"target": None, "modes": ["linear", "scratch"]},
    "regression": {"target": "m0", "modes": ["scratch"]},
}
CHECKPOINTS = {"simclr": "/ckpt/simclr/last.ckpt", "barlow_twins": "/ckpt/bt/last.ckpt"}
BUDGET = {"batch_size": 8, "epochs": 2, "lp_epochs": 1, "warmup_epochs": 0.2}


def fake_job(probes_dir: Path, job: dict, metrics: dict) -> None:
    """What a finished probe job leaves: results.json and the Hydra config with study_job."""
    run_dir = probes_dir / job["name"]
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"study_job": job}), run_dir / ".hydra" / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps({"metrics": metrics}))


def test_budget_keeps_the_steps_and_caps_tiny_fractions():
    assert probe_budget(4200, 64, 150, 50, 0.5, 0.1) == {
        "batch_size": 64,
        "epochs": 3,  # 65 steps an epoch
        "lp_epochs": 2,
        "warmup_epochs": 0.3,
    }
    tiny = probe_budget(43, 64, 150, 50, 0.5, 0.1)
    assert (tiny["batch_size"], tiny["epochs"], tiny["lp_epochs"]) == (43, 50, 25)


def test_plan_covers_every_model_fraction_and_seed_and_pending_skips_finished(tmp_path):
    jobs = plan_jobs(TASKS, CHECKPOINTS, [0.1, 1.0], [0, 1], {0.1: BUDGET, 1.0: BUDGET})
    # classification: 2 pretrained linear + scratch; regression: scratch; x 2 fractions x 2 seeds
    assert len(jobs) == (3 + 1) * 2 * 2
    assert len({job["name"] for job in jobs}) == len(jobs)
    linear = next(j for j in jobs if j["mode"] == "linear" and j["pretrained"] == "barlow_twins")
    assert linear["backbone"] == CHECKPOINTS["barlow_twins"]
    assert all(j["backbone"] is None for j in jobs if j["mode"] == "scratch")
    assert jobs[0]["name"] == "classification/simclr-linear/f0.1/seed0"
    fake_job(tmp_path, jobs[0], {"test/auroc": 0.8})
    (tmp_path / jobs[1]["name"]).mkdir(parents=True)  # started, not finished: runs again
    assert pending(jobs, tmp_path) == jobs[1:]
    value = sweep_value(jobs[:2])
    assert value.count("},{") == 1 and "backbone:'/ckpt/simclr/last.ckpt'" in value


def fake_study(probes_dir: Path) -> list[dict]:
    """Two models x two fractions x three seeds of classification, one regression model."""
    jobs = plan_jobs(TASKS, CHECKPOINTS, [0.1, 1.0], [0, 1, 2], {0.1: BUDGET, 1.0: BUDGET})
    for job in jobs:
        base = 0.6 + 0.2 * job["fraction"] + 0.01 * job["seed"]
        metrics = (
            {"test/auroc": base, "test/acc": base - 0.1, "test/loss": 1.0}
            if job["task"] == "classification"
            else {"test/mae": 10 - job["seed"], "test/resolution": 0.2}
        )
        fake_job(probes_dir, job, metrics)
    return jobs


def test_collection_writes_rows_mean_std_table_and_plots(tmp_path):
    jobs = fake_study(tmp_path / "probes")
    metrics = ["test/auroc", "test/acc", "test/mae", "test/resolution"]
    rows = result_rows(load_results(tmp_path / "probes"), metrics)
    assert len(rows) == len(jobs)
    path = write_csv(rows, tmp_path / "results.csv")
    with path.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(jobs)
    first = written[0]
    assert (first["task"], first["model"], first["fraction"], first["seed"]) == (
        "classification",
        "barlow_twins-linear",
        "0.1",
        "0",
    )
    assert float(first["test/auroc"]) == pytest.approx(0.62)

    summary = summarise(rows, metrics)
    cell = next(
        s
        for s in summary
        if (s["model"], s["fraction"], s["metric"]) == ("scratch", 1.0, "test/auroc")
        and s["task"] == "classification"
    )
    assert cell["n"] == 3
    assert cell["mean"] == pytest.approx(0.81)
    assert cell["std"] == pytest.approx(statistics.stdev([0.80, 0.81, 0.82]))
    mae = next(s for s in summary if s["metric"] == "test/mae")
    assert (mae["mean"], mae["std"]) == (pytest.approx(9.0), pytest.approx(1.0))

    table = markdown_tables(summary, {"nconst": 0.84})
    assert "### classification: test/auroc" in table
    assert "| scratch | 0.6300 ± 0.0100 | 0.8100 ± 0.0100 |" in table
    assert "| nconst | 0.8400 |" in table

    plots = plot_study(summary, {"nconst": 0.84}, tmp_path / "plots")
    assert len(plots) == 4  # 2 classification + 2 regression metrics
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in plots)


def test_oriented_auc_matches_a_hand_count():
    # (positive, negative) pairs: 3>1, 3>2, 2>1 win, 2=2 half, 0.5<1 and 0.5<2 lose: 3.5 / 6
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([3.0, 2.0, 0.5, 1.0, 2.0])
    assert oriented_auc(scores, labels, scores, labels) == pytest.approx(3.5 / 6)
    # a count that is low for class 1 on the training split is flipped before the test
    train_labels = np.array([1, 0])
    assert oriented_auc(np.array([5.0, 9.0]), train_labels, -scores, labels) == pytest.approx(
        3.5 / 6
    )


def test_nonempty_pixels_counts_pixels_with_a_deposit_in_any_channel():
    class Source:
        def read(self, indices: np.ndarray) -> np.ndarray:
            images = np.zeros((len(indices), 2, 2, 2), dtype=np.float32)
            images[:, 0, 0, 0] = 1.0  # one pixel in channel 0
            images[:, 1, 0, 0] = 1.0  # the same pixel in channel 1: counted once
            images[:, 1, 1, 1] = indices * 1e-4  # below the threshold for index < 10
            return images

    counts = nonempty_pixels(Source(), np.array([0, 5, 20]), threshold=1e-3)
    assert counts.tolist() == [1.0, 1.0, 2.0]


@pytest.mark.parametrize("preset", ["label_efficiency_small", "label_efficiency_full"])
def test_every_job_of_a_preset_composes_with_keys_that_exist(preset, tmp_path):
    """A renamed config key must not surface only when a study reaches that job."""
    study = compose_run([f"experiment={preset}"], tmp_path).study
    for method in study.pretrain.checkpoints:
        compose_run([f"method={method}", *study.common, *study.pretrain.overrides], tmp_path)
    probe = compose_run(["method=probe", *study.common, *study.probe.overrides], tmp_path)
    for override in JOB_OVERRIDES:
        key = override.split("=", 1)[0]
        if not key.startswith("hydra."):
            assert OmegaConf.select(probe, key, default=KeyError) is not KeyError, key
