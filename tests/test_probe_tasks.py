"""Probe tasks: several regression targets in one head, their loss, metrics and checkpoint metric;
a probe loads its backbone when its dataset is not the checkpoint's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, mean_squared_error

from ssl_lightning.errors import UserError
from ssl_lightning.methods.probe_tasks import Regression, probe_task

TARGETS = ("m0", "pt", "nconst")


def fitted(targets: str | list[str], values: np.ndarray) -> Regression:
    task = Regression(targets)
    task.target_scaling.fit(values)
    return task


def sample(n: int = 40, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Targets on very different scales (a mass, a momentum, a count) and head outputs."""
    rng = np.random.default_rng(seed)
    values = np.column_stack([rng.normal(50, 10, n), rng.normal(500, 100, n), rng.poisson(30, n)])
    return values.astype(np.float32), torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32))


def batch_of(values: np.ndarray, names: tuple[str, ...] = TARGETS) -> dict:
    return {"targets": {name: torch.from_numpy(values[:, i]) for i, name in enumerate(names)}}


def test_the_loss_of_several_targets_is_the_mean_of_each_targets_standardised_mse():
    values, out = sample()
    task = fitted(list(TARGETS), values)
    target = task.target(batch_of(values))
    standardised = (values - values.mean(axis=0, dtype=np.float64)) / values.std(axis=0)
    per_target = [
        F.mse_loss(out[:, i], torch.from_numpy(standardised[:, i]).float())
        for i in range(len(TARGETS))
    ]
    torch.testing.assert_close(
        task.loss(out, target), torch.stack(per_target).mean(), rtol=1e-5, atol=0
    )


def test_one_target_keeps_its_loss_scalar_scaling_and_metric_names():
    values, out = sample()
    task = fitted("m0", values[:, :1])
    target = task.target(batch_of(values[:, :1], ("m0",)))
    m0 = values[:, 0].astype(np.float64)
    expected = F.mse_loss(out[:, 0], torch.from_numpy((m0 - m0.mean()) / m0.std()).float())
    torch.testing.assert_close(task.loss(out[:, :1], target), expected, rtol=1e-5, atol=0)
    assert task.target_scaling.mean.shape == ()  # single-target checkpoints load as before
    assert set(task.metrics("val/").keys()) == {"val/mae", "val/rmse", "val/resolution"}
    assert task.checkpoint_metric == "val/mae"


def test_per_target_metrics_equal_sklearn_and_the_scaled_mae_picks_the_checkpoint():
    values, out = sample(n=50)
    task = fitted(list(TARGETS), values)
    prediction, target = task.prediction(out), task.target(batch_of(values))
    metrics = task.metrics("test/")
    for rows in (slice(0, 17), slice(17, 50)):  # accumulated over batches
        metrics.update(prediction[rows], target[rows])
    computed = {name: float(value) for name, value in metrics.compute().items()}
    true, pred = target.numpy(), prediction.numpy()
    for i, name in enumerate(TARGETS):
        assert computed[f"test/mae_{name}"] == pytest.approx(
            mean_absolute_error(true[:, i], pred[:, i]), rel=1e-5
        )
        assert computed[f"test/rmse_{name}"] == pytest.approx(
            mean_squared_error(true[:, i], pred[:, i]) ** 0.5, rel=1e-5
        )
    scaled = np.mean(
        [mean_absolute_error(true[:, i], pred[:, i]) / values[:, i].std() for i in range(3)]
    )
    assert computed["test/mae_scaled"] == pytest.approx(scaled, rel=1e-5)
    assert (task.checkpoint_metric, task.checkpoint_mode) == ("val/mae_scaled", "min")
    columns = task.prediction_columns(prediction)
    assert list(columns) == [f"prediction_{name}" for name in TARGETS]


def test_a_target_named_twice_or_none_is_refused_in_one_line():
    with pytest.raises(UserError, match="names a target twice"):
        probe_task("regression", ["m0", "m0"], None)
    with pytest.raises(UserError, match=r"method.target=\[m0,pt\]"):
        probe_task("regression", [], None)


def test_probe_on_another_dataset_loads_the_pretrained_backbone(pretrained, train):
    """Pretrained on 32x32 blobs, probed on another set of 24x24 blobs (its own split)."""
    ckpt = pretrained["checkpoints"]["last"]
    results = train(
        [
            "method=probe",
            "method.mode=linear",
            f"method.pretrained={ckpt}",
            "dataset.source.seed=7",
            "dataset.source.image_size=24",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
        ],
        "other_data_probe",
    )
    before = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    after = torch.load(results["checkpoints"]["best"], map_location="cpu", weights_only=False)
    for key, value in before.items():
        if key.startswith("backbone."):
            assert torch.equal(value, after["state_dict"][key]), key
    assert results["dataset_fingerprint"] != pretrained["dataset_fingerprint"]


def test_probe_of_a_checkpoint_with_other_channels_is_refused_in_one_line(
    pretrained, train, tmp_path
):
    with pytest.raises(UserError, match="in_channels") as info:
        train(
            [
                "method=probe",
                f"method.pretrained={pretrained['checkpoints']['last']}",
                "dataset=e2e_2g_labelled",  # 8 channels; the checkpoint takes 3
                f"dataset.source.path={tmp_path / '2g.h5'}",
            ]
        )
    assert "\n" not in str(info.value)
