"""Shared fixtures: composing and running `ssl-train` in-process on tiny data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Data the tests generate or convert goes to a folder of the session, never the user's data
    folder (paths.data_dir), and so do the per-user caches (file digests, W&B's and matplotlib's
    under $XDG_CACHE_HOME); subprocesses inherit both. A test may set its own."""
    path = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_LIGHTNING_DATA", str(path))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield path


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
