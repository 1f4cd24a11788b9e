"""Honest splits: SSL never reads the test split; a probe's validation set shrinks with its
label fraction (stratified, nested, >= MIN_VAL_PER_CLASS a class); the resolution metric."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssl_lightning.data.datamodule import MIN_VAL_PER_CLASS
from ssl_lightning.data.needs import DataNeeds
from ssl_lightning.metrics import RelativeResolution
from ssl_lightning.train import build_datamodule
from tests.conftest import with_fast
from tests.helpers import compose_run


def datamodule(tmp_path, label_fraction: float, supervised: bool):
    """The synthetic data module of a FAST run for a module that does (not) train on labels, set
    up, attached to a stand-in trainer."""
    cfg = compose_run(with_fast([f"dataset.label_fraction={label_fraction}"]), tmp_path)
    needs = DataNeeds(views=0, labelled=supervised, target_scaling=None)
    dm = build_datamodule(cfg, tmp_path, needs)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1)
    return dm


def loader_indices(loader) -> set[int]:
    return {int(i) for batch in loader for i in batch["index"]}


def test_ssl_pretraining_reads_train_and_val_but_never_test(tmp_path):
    dm = datamodule(tmp_path, 0.1, supervised=False)
    test = set(dm.split["test"].tolist())
    assert loader_indices(dm.train_dataloader()).isdisjoint(test)
    val = loader_indices(dm.val_dataloader())
    assert val == set(dm.split["val"].tolist())  # SSL: the whole val split, no label fraction
    assert val.isdisjoint(test)


def test_probe_validation_shrinks_with_the_label_fraction(tmp_path):
    labels = None
    chosen = {}
    for fraction in (0.1, 0.5, 1.0):
        dm = datamodule(tmp_path / str(fraction), fraction, supervised=True)
        labels = dm.source.labels
        chosen[fraction] = loader_indices(dm.val_dataloader())
        assert chosen[fraction] == set(dm.val_indices(labelled=True).tolist())
        assert chosen[fraction].isdisjoint(dm.split["test"].tolist())
    val = np.array(sorted(chosen[1.0]))
    per_class = np.bincount(labels[val])
    for fraction in (0.1, 0.5):
        counts = np.bincount(labels[np.array(sorted(chosen[fraction]))], minlength=len(per_class))
        expected = np.minimum(
            per_class, np.maximum(MIN_VAL_PER_CLASS, np.ceil(fraction * per_class))
        )
        assert counts.tolist() == expected.astype(int).tolist()
    assert chosen[0.1] <= chosen[0.5] <= chosen[1.0]  # nested, like the training subsets
    assert len(chosen[0.1]) < len(chosen[1.0])


def test_relative_resolution_is_the_std_of_relative_residuals_over_batches():
    prediction = torch.tensor([11.0, 18.0, 33.0, 40.0])
    true = torch.tensor([10.0, 20.0, 30.0, 40.0])
    metric = RelativeResolution()
    metric.update(prediction[:2], true[:2])
    metric.update(prediction[2:], true[2:])
    relative = np.array([0.1, -0.1, 0.1, 0.0])
    assert float(metric.compute()) == pytest.approx(relative.std(), rel=1e-6)
