"""Shared fixtures: composing and running `ssl-train` in-process on tiny data."""

from __future__ import annotations

import os

import pytest

from ssl_lightning.train import run
from tests.helpers import compose_run

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

FAST = [
    "dataset=synthetic",
    "augment=natural",
    "logger=csv",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "method.batch_size=32",
    "loader.eval_batch_size=64",
]


def with_fast(overrides: list[str]) -> list[str]:
    """FAST settings, except those the caller overrides (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [*(f for f in FAST if f.split("=", 1)[0] not in keys), *overrides]


@pytest.fixture
def train(tmp_path):
    """Run `ssl-train` in-process with FAST settings plus overrides; returns results.json's dict."""

    def _train(overrides: list[str], name: str = "run") -> dict:
        return run(compose_run(with_fast(overrides), tmp_path / name))

    return _train


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> dict:
    """One short SimCLR pretraining run shared by the probe tests."""
    out = tmp_path_factory.mktemp("pretrain")
    return run(compose_run(with_fast(["method=simclr"]), out))
