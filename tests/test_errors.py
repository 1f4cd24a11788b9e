"""Bad input stops with one line naming the problem and the fix (and exit status 2 on the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import ssl_lightning.methods.simclr as simclr_module
from ssl_lightning.errors import UserError


def write_h5(path: Path, channels: int = 3, key: str = "X_jets", n: int = 64) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f[key] = rng.random((n, 16, 16, channels), dtype=np.float32)
        f["y"] = (np.arange(n) % 2).astype(np.float32)
        f["pt"] = rng.random(n, dtype=np.float32)
        f["m0"] = rng.random(n, dtype=np.float32)
    return path


def test_missing_data_file(train, tmp_path):
    with pytest.raises(UserError, match="not found.*dataset.source.path"):
        train(["dataset=hdf5", f"dataset.source.path={tmp_path}/nope.h5"])


def test_wrong_hdf5_key(train, tmp_path):
    path = write_h5(tmp_path / "a.h5", key="X_jet")
    with pytest.raises(UserError, match="X_jet.*image_key"):
        train(["dataset=hdf5", f"dataset.source.path={path}"])


def test_channel_mismatch(train, tmp_path):
    path = write_h5(tmp_path / "b.h5", channels=8)
    with pytest.raises(UserError, match="8 channels.*dataset.channels=8"):
        train(["dataset=hdf5", f"dataset.source.path={path}"])


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_label_fraction_outside_unit_interval(train, fraction: str):
    with pytest.raises(UserError, match="label_fraction"):
        train(["method=probe", "method.mode=scratch", f"dataset.label_fraction={fraction}"])


def test_batch_larger_than_training_split(train):
    with pytest.raises(UserError, match="batch_size=1000.*384 training samples"):
        train(["method.batch_size=1000"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_hardware_without_a_gpu(train, tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU: use hardware=cpu"):
        train(["hardware=gpu", "logger=wandb"])
    assert not list(tmp_path.rglob("*wandb*"))  # stopped before a W&B run was made


def test_probe_checkpoint_missing(train, tmp_path):
    with pytest.raises(UserError, match="probe checkpoint not found"):
        train(["method=probe", f"method.pretrained={tmp_path}/none.ckpt"])


def test_probe_checkpoint_with_another_backbone(train, pretrained):
    ckpt = pretrained["checkpoints"]["last"]
    with pytest.raises(UserError, match="holds backbone"):
        train(["method=probe", "backbone=resnet15_wide", f"method.pretrained={ckpt}"])


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    train, monkeypatch, tmp_path
):
    calls = {"n": 0}
    real_loss = simclr_module.nt_xent_loss

    def loss_turning_nan(z1, z2, temperature):
        calls["n"] += 1
        loss = real_loss(z1, z2, temperature)
        return loss * float("nan") if calls["n"] > 13 else loss  # 12 train + 1 val batch, then NaN

    monkeypatch.setattr(simclr_module, "nt_xent_loss", loss_turning_nan)
    with pytest.raises(UserError, match=r"non-finite loss \(nan\) at epoch 1, step 12") as err:
        train(["trainer.limit_val_batches=1"], "nan")
    last = tmp_path / "nan" / "checkpoints" / "last.ckpt"
    assert str(last) in str(err.value)
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 12
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_cli_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_lightning.train",
            "dataset=hdf5",
            "logger=none",
            f"dataset.source.path={tmp_path}/missing.h5",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "missing.h5" in error_lines[0]
