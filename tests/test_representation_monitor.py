"""RepresentationMonitor: bad settings are user errors; in a real run it logs sane values."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from ssl_lightning.callbacks.representation import RepresentationMonitor
from ssl_lightning.data.sources.synthetic import SyntheticSource
from ssl_lightning.errors import UserError
from ssl_lightning.train import CONFIG_DIR, build, build_datamodule
from tests.conftest import FAST
from tests.helpers import compose_run

CALLBACKS_YAML = Path(CONFIG_DIR) / "callbacks" / "default.yaml"


def monitor(**changes) -> RepresentationMonitor:
    """The callback as conf/callbacks/default.yaml builds it, with some settings changed."""
    node = OmegaConf.load(CALLBACKS_YAML).representation
    return build(OmegaConf.merge(node, changes))


def test_bad_monitor_settings_are_user_errors():
    with pytest.raises(UserError, match="knn_temperature"):
        monitor(knn_temperature=0)


@pytest.fixture(scope="module")
def short_pretraining(tmp_path_factory):
    """One SimCLR epoch on synthetic blobs with the monitor; zero-suppression above the
    synthetic noise floor, so the non-empty-pixel count varies with the blob size."""
    out = tmp_path_factory.mktemp("monitor")
    cfg = compose_run(
        [*FAST, "method=simclr", "logger=none", "dataset.preprocess.zero_suppress=0.05"], out
    )
    model = build(
        OmegaConf.to_container(cfg.method, resolve=True), _recursive_=False, _convert_="all"
    )
    datamodule = build_datamodule(cfg, out, model.data_needs)
    callback = monitor(every_n_epochs=5, knn_k=10)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=[callback],
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer, model, datamodule, callback


def test_monitor_logs_sane_diagnostics_on_the_last_epoch(short_pretraining):
    trainer, _, _, _ = short_pretraining
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert 0.25 <= metrics["val/knn_acc"] <= 1  # 4 balanced classes: at least chance
    assert 1 <= metrics["val/effective_rank"] <= 32  # 32-d ResNet-15 features
    assert 0 < metrics["val/embed_std_ratio"] <= 1.5
    assert metrics["val/embed_std"] == pytest.approx(metrics["val/embed_std_ratio"] / 64**0.5)
    assert -1 < metrics["val/shortcut_r2"] <= 1
    assert "val/knn_auroc" not in metrics  # binary only


def test_monitor_skips_knn_without_labels_and_shortcut_without_varying_count(
    short_pretraining, monkeypatch
):
    _, model, datamodule, callback = short_pretraining
    monkeypatch.setattr(SyntheticSource, "labels", property(lambda self: None))
    datamodule.preprocess.zero_suppress = 0.0  # noise everywhere: every pixel is non-empty
    try:
        metrics = callback.compute(model, datamodule)
    finally:
        datamodule.preprocess.zero_suppress = 0.05
    assert set(metrics) == {"val/embed_std", "val/embed_std_ratio", "val/effective_rank"}


def test_monitor_uses_the_named_target_as_the_count(short_pretraining):
    _, model, datamodule, _ = short_pretraining
    named = monitor(shortcut_target="size").compute(model, datamodule)
    pixels = monitor().compute(model, datamodule)
    assert named["val/shortcut_r2"] != pixels["val/shortcut_r2"]
