"""`ssl-train` end to end on tiny data: runs, results.json, checkpoints, W&B offline, probes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from ssl_lightning.methods.simclr import SimCLR
from ssl_lightning.train import build_datamodule
from tests.conftest import with_fast
from tests.helpers import compose_run
from tests.wandb_offline import offline_run_file, read_history


def test_simclr_run_writes_results_and_checkpoints(pretrained):
    assert (pretrained["method"], pretrained["dataset"], pretrained["seed"]) == (
        "simclr",
        "synthetic",
        0,
    )
    on_disk = json.loads((Path(pretrained["run_dir"]) / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(pretrained))
    for name in ("last", "best"):
        assert Path(pretrained["checkpoints"][name]).is_file()
    metrics = pretrained["metrics"]
    for key in ("train/loss", "val/loss", "val/online_acc", "val/online_auroc"):
        assert math.isfinite(metrics[key]), key
    assert 0 <= metrics["val/online_acc"] <= 1
    assert (Path(pretrained["run_dir"]) / "split.npz").is_file()
    assert pretrained["duration_s"] > 0


def test_best_checkpoint_restores_the_same_validation_metric(pretrained, tmp_path):
    best = pretrained["checkpoints"]["best"]
    saved = torch.load(best, map_location="cpu", weights_only=False)
    ckpt_cb = next(v for k, v in saved["callbacks"].items() if v.get("monitor") == "val/loss")
    cfg = compose_run(with_fast(["method=simclr", "logger=none"]), tmp_path)
    model = SimCLR.load_from_checkpoint(best)
    datamodule = build_datamodule(cfg, Path(pretrained["run_dir"]), model.data_needs)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, use_distributed_sampler=False)
    (validated,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    assert validated["val/loss"] == pytest.approx(float(ckpt_cb["best_model_score"]), rel=1e-5)


def test_barlow_twins_loss_falls_on_synthetic_data(train):
    results = train(["method=barlow_twins", "trainer.max_epochs=4"])
    assert results["train_loss_last_epoch"] < results["train_loss_first_step"]
    assert math.isfinite(results["metrics"]["val/loss"])


def test_ssl_run_names_its_batch_size_when_logging(train, recwarn):
    """The views are one [2N] tensor next to N labels: epoch-level logs must pass N rather than
    leave Lightning to guess (it warns, and a guess could weight the epoch means wrongly)."""
    train(["method=simclr", "trainer.max_epochs=1"])
    guessed = [str(w.message) for w in recwarn if "infer the `batch_size`" in str(w.message)]
    assert not guessed, guessed[0]


def test_wandb_offline_run_is_readable_from_its_files(train):
    results = train(["logger=wandb", "trainer.max_epochs=1"])
    wandb_file = offline_run_file(Path(results["run_dir"]))
    assert Path(results["wandb_dir"]).is_relative_to(Path(results["run_dir"]))
    assert Path(results["wandb_dir"]) == wandb_file.parent  # what `wandb sync` takes
    losses = [row["train/loss"] for row in read_history(wandb_file) if "train/loss" in row]
    assert len(losses) == 12  # 384 training samples / batch 32, logged every step
    assert losses[0] == pytest.approx(results["train_loss_first_step"], rel=1e-5)
    assert sum(losses) / len(losses) == pytest.approx(results["train_loss_last_epoch"], rel=1e-5)


def test_linear_probe_loads_the_pretrained_backbone_and_keeps_it_frozen(pretrained, train):
    ckpt = pretrained["checkpoints"]["last"]
    results = train(["method=probe", "method.mode=linear", f"method.pretrained={ckpt}"], "probe")
    for key in ("test/acc", "test/auroc", "val/auroc"):
        assert 0 <= results["metrics"][key] <= 1, key
    pretrained_state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    probe_state = torch.load(
        results["checkpoints"]["last"], map_location="cpu", weights_only=False
    )["state_dict"]
    backbone_keys = [k for k in pretrained_state if k.startswith("backbone.")]
    assert backbone_keys
    for key in backbone_keys:
        assert torch.equal(pretrained_state[key], probe_state[key]), key


def test_probe_results_say_which_probe_ran_and_name_both_checkpoints(pretrained, train):
    """One epoch: best.ckpt is from the first, whose saved callback state (restored to test
    it) had no last checkpoint yet, so `checkpoints.last` was ""."""
    ckpt = pretrained["checkpoints"]["last"]
    args = ["method=probe", f"method.pretrained={ckpt}", "dataset.label_fraction=0.5"]
    results = train([*args, "trainer.max_epochs=1"], "probe_record")
    assert results["probe"] == {
        "mode": "linear",
        "task": "classification",
        "target": None,
        "label_fraction": 0.5,
        "backbone_checkpoint": str(Path(ckpt).resolve()),
    }
    folder = Path(results["run_dir"]) / "checkpoints"
    assert results["checkpoints"] == {
        "last": str(folder / "last.ckpt"),
        "best": str(folder / "best.ckpt"),
    }
    assert all(Path(path).is_file() for path in results["checkpoints"].values())
    assert pretrained["probe"] is None  # an SSL run is no probe


def test_finetune_probe_changes_the_backbone(pretrained, train):
    ckpt = pretrained["checkpoints"]["last"]
    results = train(["method=probe", "method.mode=finetune", f"method.pretrained={ckpt}"], "ft")
    before = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    after = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    assert not torch.equal(before["backbone.stem.0.weight"], after["backbone.stem.0.weight"])


def test_regression_probe_reports_errors_in_target_units(train):
    results = train(
        ["method=probe", "method.mode=scratch", "method.task=regression", "method.target=size"],
        "reg",
    )
    metrics = results["metrics"]
    assert 0 < metrics["test/mae"] <= metrics["test/rmse"]
    saved = torch.load(results["checkpoints"]["best"], map_location="cpu", weights_only=False)
    mean = float(saved["state_dict"]["task.target_scaling.mean"])
    assert (
        mean > 0 and float(saved["state_dict"]["task.target_scaling.std"]) > 0
    )  # blob width, in pixels


def test_lpft_keeps_the_backbone_frozen_for_lp_epochs_then_fine_tunes(pretrained, train):
    ckpt = pretrained["checkpoints"]["last"]
    before = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    key = "backbone.stem.0.weight"
    args = ["method=probe", "method.mode=lpft", f"method.pretrained={ckpt}"]
    linear_only = train([*args, "method.lp_epochs=2"], "lp")  # both epochs in the linear phase
    after_lp = torch.load(linear_only["checkpoints"]["last"], weights_only=False)["state_dict"]
    assert torch.equal(before[key], after_lp[key])
    assert not torch.equal(after_lp["head.1.weight"], torch.zeros_like(after_lp["head.1.weight"]))
    both = train([*args, "method.lp_epochs=1"], "lpft")
    after_ft = torch.load(both["checkpoints"]["last"], weights_only=False)["state_dict"]
    assert not torch.equal(before[key], after_ft[key])


def test_last_checkpoint_follows_every_epoch_when_the_best_stays_behind(train):
    """Best picked by the lowest epoch: best.ckpt stays at epoch 0, last.ckpt must not
    (Lightning's save_last wrote it only along with a new best)."""
    results = train(
        ["method=simclr", "trainer.max_epochs=3", "method.checkpoint_metric=epoch", "logger=none"]
    )
    epoch_of = {
        name: torch.load(path, map_location="cpu", weights_only=False)["epoch"]
        for name, path in results["checkpoints"].items()
    }
    assert epoch_of == {"best": 0, "last": 2}
