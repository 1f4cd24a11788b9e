"""Physics data: the generated-jets dataset, the real E2E layouts, pixel preprocessing."""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ssl_lightning.data.preprocess import Preprocess
from ssl_lightning.data.sources.e2e_parquet import E2EParquetSource
from ssl_lightning.data.sources.generated_jets import GeneratedJetsSource
from ssl_lightning.errors import UserError

JETS = dict(
    num_jets=16,
    seed=3,
    image_size=16,
    pixel_width=0.05,
    pt_min=500.0,
    pt_max=550.0,
    eta_max=2.5,
    workers=1,
    target_keys=["pt", "m0", "nconst"],
    in_memory=True,
)


def test_generated_jets_are_made_once_and_regenerated_when_settings_change(tmp_path):
    source = GeneratedJetsSource(data_dir=str(tmp_path), **JETS)
    source.prepare()
    assert source.path.is_file() and source.fingerprint() in source.path.name
    images = source.read(np.arange(16))
    assert images.shape == (16, 3, 16, 16) and (images >= 0).all()
    assert sorted(np.bincount(source.labels).tolist()) == [8, 8]
    assert set(source.targets) == {"pt", "m0", "nconst"}
    assert ((source.targets["pt"] >= 500) & (source.targets["pt"] <= 550)).all()
    written = source.path.stat().st_mtime_ns
    again = GeneratedJetsSource(data_dir=str(tmp_path), **JETS)
    again.prepare()
    assert again.path == source.path and source.path.stat().st_mtime_ns == written  # reused
    changed = GeneratedJetsSource(data_dir=str(tmp_path), **{**JETS, "pt_max": 560.0})
    assert changed.path != source.path  # a changed setting never reuses a stale file


def write_e2e_parquet(path, n: int = 6, size: int = 8):
    rng = np.random.default_rng(0)
    images = rng.random((n, 3, size, size), dtype=np.float32)
    images[images < 0.7] = 0  # sparse like calorimeter images
    table = pa.table(
        {
            "X_jets": [img.tolist() for img in images],
            "y": (np.arange(n) % 2).astype(np.float32),
            "pt": rng.random(n, dtype=np.float32) * 100,
            "m0": rng.random(n, dtype=np.float32) * 10,
        }
    )
    pq.write_table(table, path, row_group_size=4)
    return images, table


def test_e2e_parquet_is_converted_once_and_read_exactly(tmp_path):
    images, table = write_e2e_parquet(tmp_path / "qg.parquet")
    source = E2EParquetSource(
        str(tmp_path / "qg.parquet"),
        str(tmp_path / "cache"),
        "X_jets",
        "y",
        ["pt", "m0"],
        in_memory=False,
    )
    source.prepare()
    order = np.array([5, 0, 3, 3])
    np.testing.assert_array_equal(source.read(order), images[order])
    assert source.labels.tolist() == [0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(source.targets["m0"], table["m0"].to_numpy())
    cached = source.path.stat().st_mtime_ns
    E2EParquetSource(
        str(tmp_path / "qg.parquet"),
        str(tmp_path / "cache"),
        "X_jets",
        "y",
        ["pt", "m0"],
        in_memory=False,
    ).prepare()
    assert source.path.stat().st_mtime_ns == cached


def test_e2e_parquet_missing_column_names_the_fix(tmp_path):
    write_e2e_parquet(tmp_path / "qg.parquet")
    source = E2EParquetSource(
        str(tmp_path / "qg.parquet"), str(tmp_path / "c"), "X_jets", "y", ["pT"], in_memory=False
    )
    with pytest.raises(UserError, match="no column.*pT.*target_keys"):
        source.prepare()


def test_preprocess_zero_suppression_fixed_scales_and_clipping():
    x = torch.tensor([0.0005, 0.002, 4.0, 100.0]).view(1, 1, 2, 2)
    pre = Preprocess(
        zero_suppress=1e-3, scaling="fixed", channel_scales=[2.0], clip=10.0, channels=1
    )
    assert pre.suppress(x).flatten().tolist() == pytest.approx([0.0, 0.002, 4.0, 100.0])
    assert pre.scale(pre.suppress(x)).flatten().tolist() == pytest.approx([0.0, 0.001, 2.0, 10.0])
    with pytest.raises(UserError, match="channel_scales"):
        Preprocess(zero_suppress=0, scaling="fixed", channel_scales=None, clip=None, channels=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_suppression_cuts_exactly_below_the_threshold(dtype):
    """Pixels equal to the cut stay, the next value below it goes, in the image's own dtype."""
    cut = torch.tensor(1e-3, dtype=dtype)
    below = torch.nextafter(cut, torch.tensor(0.0, dtype=dtype))
    x = torch.stack([below, cut, -cut, torch.tensor(float("nan"), dtype=dtype)]).view(1, 1, 2, 2)
    pre = Preprocess(zero_suppress=1e-3, scaling="none", channel_scales=None, clip=None, channels=1)
    out = pre.suppress(x).flatten()
    assert out.dtype == dtype
    assert out[:3].tolist() == [0.0, cut.item(), 0.0]
    assert out[3].isnan()  # a NaN pixel is not hidden: the loss check reports it


def test_standard_scaling_uses_the_training_images_it_is_given():
    pre = Preprocess(
        zero_suppress=0, scaling="standard", channel_scales=None, clip=None, channels=2
    )
    train = torch.randn(64, 2, 4, 4) * torch.tensor([1.0, 5.0]).view(1, 2, 1, 1) + 3
    pre.fit(train)
    scaled = pre.scale(train)
    torch.testing.assert_close(scaled.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled.std(dim=(0, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)


def write_task_2g(path, labelled: bool, n: int = 96):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["jet"] = rng.random((n, 16, 16, 8), dtype=np.float32)
        if labelled:
            f["Y"] = (np.arange(n) % 2).astype(np.float32)
            f["m"] = rng.random(n, dtype=np.float32) * 50
            f["pT"] = rng.random(n, dtype=np.float32) * 500
    return path


def test_task_2g_pretrains_unlabelled_then_probes_the_labelled_file(train, tmp_path):
    unlabelled = write_task_2g(tmp_path / "Dataset_Specific_Unlabelled.h5", labelled=False)
    pretrain = train(
        [
            "dataset=e2e_2g",
            f"dataset.source.path={unlabelled}",
            "augment=jets",
            "method.batch_size=16",
        ],
        "2g",
    )
    assert "val/online_acc" not in pretrain["metrics"]  # no labels, no online probe
    labelled = write_task_2g(tmp_path / "labelled.h5", labelled=True)
    probe = train(
        [
            "dataset=e2e_2g_labelled",
            f"dataset.source.path={labelled}",
            "method=probe",
            "method.mode=linear",
            "method.task=regression",
            "method.target=m",
            f"method.pretrained={pretrain['checkpoints']['last']}",
            "method.batch_size=16",
        ],
        "2g_probe",
    )
    assert 0 < probe["metrics"]["test/mae"] <= probe["metrics"]["test/rmse"]


def test_qg_e2e_channel_last_file_trains(train, tmp_path):
    path = tmp_path / "qg.h5"
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:
        f["X_jets"] = rng.random((96, 16, 16, 3), dtype=np.float32)
        f["y"] = (np.arange(96) % 2).astype(np.float32)
        f["pt"] = rng.random(96, dtype=np.float32)
        f["m0"] = rng.random(96, dtype=np.float32)
    results = train(
        ["dataset=qg_e2e", f"dataset.source.path={path}", "augment=jets", "method.batch_size=16"],
        "qg",
    )
    assert 0 <= results["metrics"]["val/online_auroc"] <= 1
