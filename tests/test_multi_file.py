"""Datasets as they come: several HDF5 or Parquet files read as one dataset, a channel subset,
a fingerprint that follows the bytes, streaming scaling statistics and the 2g defaults."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ssl_lightning.data import datamodule as datamodule_module
from ssl_lightning.data.needs import DataNeeds
from ssl_lightning.data.preprocess import Preprocess
from ssl_lightning.data.sources import base
from ssl_lightning.data.sources.e2e_parquet import E2EParquetSource
from ssl_lightning.data.sources.hdf5 import HDF5Source
from ssl_lightning.data.sparse_images import write_sparse_images
from ssl_lightning.errors import UserError
from ssl_lightning.train import build_datamodule
from tests.conftest import with_fast
from tests.helpers import compose_run
from tests.test_sources import write_e2e

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def assert_one_line(err: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(err.value)


# --- HDF5: a list, a glob or a folder is one dataset --------------------------------------------
def write_sparse_e2e(path: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    """The E2E layout with X_jets stored sparse (what the generator and the Parquet cache write)."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, 10, 9), dtype=np.float32)
    images[images < 0.8] = 0
    data = {
        "X_jets": images.transpose(0, 2, 3, 1),  # channels-last, as the dense files are
        "y": rng.integers(0, 2, n).astype(np.float32),
        "pt": rng.uniform(50, 500, n),
        "m0": rng.uniform(0, 30, n).astype(np.float32),
    }
    with h5py.File(path, "w") as f:
        write_sparse_images(f.create_group("X_jets"), images)
        for key in ("y", "pt", "m0"):
            f[key] = data[key]
    return data


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder of three E2E files, stored three ways, and their concatenation in path order."""
    folder = tmp_path / "runs"
    folder.mkdir()
    parts = [
        write_e2e(folder / "run0.h5", "contiguous", n=7, seed=0),
        write_e2e(folder / "run1.h5", "chunked", n=5, seed=1),
        write_sparse_e2e(folder / "run2.h5", n=4, seed=2),
    ]
    (folder / "notes.txt").write_text("not data")
    return folder, {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def e2e_files(path: object, **kwargs: object) -> HDF5Source:
    return HDF5Source(path, "X_jets", "channels_last", "y", ["pt", "m0"], False, **kwargs)


def test_hdf5_list_glob_and_folder_read_as_one_dataset_in_path_order(runs) -> None:
    folder, truth = runs
    listed = [str(folder / name) for name in ("run2.h5", "run0.h5", "run1.h5", "run0.h5")]
    sources = [e2e_files(listed), e2e_files(str(folder / "run*.h5")), e2e_files(str(folder))]
    images = truth["X_jets"].transpose(0, 3, 1, 2)
    across = np.array([15, 0, 6, 7, 7, 11, 12, 3, 15])  # every file, unsorted, repeated
    for src in sources:
        assert len(src) == 16 and src.image_shape == (3, 10, 9)
        assert [p.name for p in src.paths] == ["run0.h5", "run1.h5", "run2.h5"]
        got = src.read(across)
        assert got.dtype == np.float32 and np.array_equal(got, images[across])
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last, as one file reads
        assert np.array_equal(src.read(np.arange(16)), images)
        assert np.array_equal(src.labels, truth["y"])
        assert np.allclose(src.targets["pt"], truth["pt"])
        assert np.array_equal(src.targets["m0"], truth["m0"])
        assert src.read(np.array([], dtype=np.int64)).shape == (0, 3, 10, 9)
        with pytest.raises(IndexError):
            src.read(np.array([16]))
    assert len({src.fingerprint() for src in sources}) == 1


def test_hdf5_file_sets_that_cannot_be_one_dataset_are_one_line_errors(runs, tmp_path) -> None:
    folder, _ = runs
    cases = [
        ([], "dataset.source.path is an empty list"),
        (str(folder / "nothing*.h5"), "glob .*nothing.*matches no file: set dataset.source.path"),
        ([str(folder / "run0.h5"), str(folder / "run9.h5")], "HDF5 file not found: .*run9.h5"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("")
    cases.append((str(empty), "folder .*empty holds no HDF5 files"))
    for path, match in cases:
        with pytest.raises(UserError, match=match) as err:
            e2e_files(path)
        assert_one_line(err)
    with h5py.File(folder / "run3.h5", "w") as f:  # another image size
        f["X_jets"] = np.zeros((2, 10, 8, 3), dtype=np.float32)
        f["y"], f["pt"], f["m0"] = np.zeros(2), np.zeros(2), np.zeros(2)
    with pytest.raises(
        UserError, match=r"run3.h5 holds 'X_jets' images of shape \(3, 10, 8\).*remove run3.h5"
    ):
        e2e_files(str(folder))
    with h5py.File(folder / "run3.h5", "w") as f:  # the right images, but no m0
        f["X_jets"] = np.zeros((2, 10, 9, 3), dtype=np.float32)
        f["y"], f["pt"] = np.zeros(2), np.zeros(2)
    with pytest.raises(UserError, match="run3.h5 has no dataset 'm0'.*target_keys") as err:
        e2e_files(str(folder))
    assert_one_line(err)


# --- a channel subset ----------------------------------------------------------------------------
def test_channel_subset_reads_only_those_channels_in_that_order(runs, tmp_path) -> None:
    folder, truth = runs
    images = truth["X_jets"].transpose(0, 3, 1, 2)
    for path in (str(folder / "run0.h5"), str(folder / "run2.h5"), str(folder)):  # dense, sparse
        src = e2e_files(path, channel_subset=[2, 0])
        rows = np.arange(len(src))
        start = 12 if path.endswith("run2.h5") else 0
        assert src.image_shape == (2, 10, 9)
        assert np.array_equal(src.read(rows[::-1]), images[start + rows[::-1]][:, [2, 0]])
    one = e2e_files(str(folder / "run0.h5"), channel_subset=[1]).read(np.array([6, 2, 2]))
    assert one.transpose(0, 2, 3, 1).flags.c_contiguous  # channels-last rows, as read in full
    first = np.random.default_rng(3).random((6, 4, 5, 3), dtype=np.float32)
    with h5py.File(tmp_path / "cf.h5", "w") as f:
        f["images"] = first
    src = HDF5Source(str(tmp_path / "cf.h5"), "images", "channels_first", None, [], False, [3, 1])
    assert np.array_equal(src.read(np.array([5, 0])), first[[5, 0]][:, [3, 1]])
    for bad in ([0, 3], [1, 1], [], 2, ["a"]):
        with pytest.raises(
            UserError, match=r"channel_subset=.* distinct channel numbers .* \(0..2\)"
        ):
            e2e_files(str(folder / "run0.h5"), channel_subset=bad)


def test_dataset_channels_must_match_the_subset(runs, tmp_path) -> None:
    folder, _ = runs
    overrides = ["dataset=qg_e2e", f"dataset.source.path={folder}/run*.h5"]
    subset = "dataset.source.channel_subset=[0,2]"
    needs = DataNeeds(views=0, labelled=False, target_scaling=None)
    cfg = compose_run(with_fast([*overrides, subset]), tmp_path / "a")
    with pytest.raises(
        UserError, match="the data has 2 channels but dataset.channels=3.*dataset.channels=2"
    ):
        build_datamodule(cfg, tmp_path / "a", needs).setup("fit")
    cfg = compose_run(with_fast([*overrides, subset, "dataset.channels=2"]), tmp_path / "b")
    dm = build_datamodule(cfg, tmp_path / "b", needs)
    dm.setup("fit")
    assert dm.preprocess.divisor.shape == (1, 2, 1, 1)


# --- Parquet: the public run0/1/2 files, converted once into one cache --------------------------
def write_parquet(path: Path, n: int, seed: int, size: tuple[int, int, int] = (3, 8, 8)) -> dict:
    """E2E Parquet in the public layout: a row per jet, X_jets as C x H x W nested lists of
    doubles, y, pt, m0."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, *size))
    images[images < 0.7] = 0
    columns = {
        "X_jets": [image.tolist() for image in images],
        "y": rng.integers(0, 2, n).astype(np.float64),
        "pt": rng.uniform(70, 400, n),
        "m0": rng.uniform(0, 40, n),
    }
    pq.write_table(pa.table(columns), path, row_group_size=3)
    return {**columns, "X_jets": images}


def parquet_source(path: object, cache: Path, **kwargs: object) -> E2EParquetSource:
    return E2EParquetSource(path, str(cache), "X_jets", "y", ["pt", "m0"], False, **kwargs)


def test_parquet_files_are_converted_once_into_one_dataset(tmp_path) -> None:
    folder = tmp_path / "qg"
    folder.mkdir()
    parts = [write_parquet(folder / f"run{i}.parquet", n, seed=i) for i, n in enumerate((5, 7, 4))]
    truth = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    src = parquet_source(str(folder / "run*.parquet"), tmp_path / "cache")
    src.prepare()
    assert src.path.name.startswith("run0_and_2_more_") and len(src) == 16
    order = np.array([15, 0, 4, 5, 12, 11, 11])
    assert np.array_equal(src.read(order), truth["X_jets"][order].astype(np.float32))
    assert np.array_equal(src.labels, truth["y"])
    assert np.array_equal(src.targets["pt"], truth["pt"].astype(np.float32))
    written = src.path.stat().st_mtime_ns
    again = parquet_source([str(folder / f"run{i}.parquet") for i in (2, 1, 0)], tmp_path / "cache")
    again.prepare()
    assert again.path == src.path and src.path.stat().st_mtime_ns == written  # not converted again
    subset = parquet_source(str(folder), tmp_path / "cache", channel_subset=[1])
    assert subset.path == src.path  # the same cache, read in part
    assert np.array_equal(subset.read(order), truth["X_jets"][order][:, [1]].astype(np.float32))


def test_parquet_files_that_disagree_are_named_and_leave_no_cache(tmp_path) -> None:
    folder = tmp_path / "qg"
    folder.mkdir()
    write_parquet(folder / "run0.parquet", 4, seed=0)
    write_parquet(folder / "run1.parquet", 4, seed=1, size=(3, 8, 7))
    cache = tmp_path / "cache"
    with pytest.raises(
        UserError, match=r"run1.parquet holds X_jets images of shape \(3, 8, 7\).*leave run1"
    ):
        parquet_source(str(folder), cache).prepare()
    assert not cache.exists() or not any(cache.iterdir())  # no cache, no temp file
    pq.write_table(
        pa.table({"X_jets": [[[[1.0]]]], "y": [1.0], "pt": [1.0]}), folder / "run1.parquet"
    )
    with pytest.raises(
        UserError, match="run1.parquet has no column.*m0.*leave the file out"
    ) as err:
        parquet_source(str(folder), cache).prepare()
    assert_one_line(err)
    ragged = {"X_jets": [[[[1.0, 2.0], [3.0]]]], "y": [1.0], "pt": [1.0], "m0": [1.0]}
    pq.write_table(pa.table(ragged), folder / "run1.parquet")
    with pytest.raises(
        UserError, match="run1.parquet: X_jets rows are nested lists of unequal lengths"
    ):
        parquet_source(str(folder / "run1.parquet"), cache).prepare()
    (folder / "run1.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="cannot read .*run1.parquet as Parquet"):
        parquet_source(str(folder), cache).prepare()


# --- the fingerprint follows the bytes --------------------------------------------------------
def test_fingerprint_survives_touch_and_copy_but_not_a_changed_byte(tmp_path) -> None:
    path = tmp_path / "jets.h5"
    write_e2e(path)
    fingerprint = e2e_files(str(path)).fingerprint()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns + 10**9, stat.st_mtime_ns + 10**9))  # touch
    assert e2e_files(str(path)).fingerprint() == fingerprint
    shutil.copyfile(path, tmp_path / "copy.h5")  # cp to elsewhere, and back over the original
    assert e2e_files(str(tmp_path / "copy.h5")).fingerprint() == fingerprint
    shutil.copyfile(tmp_path / "copy.h5", path)
    assert e2e_files(str(path)).fingerprint() == fingerprint
    with h5py.File(path, "r") as f:
        pixel = f["X_jets"].id.get_offset() + 4 * 100  # a byte of one pixel
    with path.open("r+b") as f:
        f.seek(pixel)
        byte = f.read(1)
        f.seek(pixel)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time stamp
    assert path.stat().st_size == stat.st_size
    assert e2e_files(str(path)).fingerprint() != fingerprint


def test_large_files_are_hashed_once_per_version(tmp_path, monkeypatch) -> None:
    path = tmp_path / "jets.h5"
    write_e2e(path)
    hashed = []
    real_sha256 = base._sha256
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(base, "CACHED_DIGEST_BYTES", 0)  # every file counts as large here
    monkeypatch.setattr(base, "_sha256", lambda p: hashed.append(p) or real_sha256(p))
    first = base.file_identity(path)
    monkeypatch.setattr(base, "_digests", {})  # a new process: only the disk cache is left
    assert base.file_identity(path) == first and len(hashed) == 1
    assert len(list(base.digest_cache_dir().iterdir())) == 1
    os.utime(path, ns=(0, 10**18))  # a new version of the same bytes: hashed once more
    assert base.file_identity(path) == first and base.file_identity(path) == first
    assert len(hashed) == 2


# --- scaling statistics in bounded memory --------------------------------------------------------
def sparse_images(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(50, 3, 7, 6, generator=generator) * torch.tensor([1.0, 300.0, 1e-3]).view(
        1, 3, 1, 1
    )
    return torch.where(torch.rand(x.shape, generator=generator) < 0.9, 0.0, x)


def test_streamed_statistics_equal_the_whole_sample_formula() -> None:
    images = sparse_images()
    pre = Preprocess(
        zero_suppress=1e-4, scaling="standard", channel_scales=None, clip=None, channels=3
    )
    pre.fit(iter(images.split([1, 13, 30, 6])))  # uneven batches, one of a single image
    whole = pre.suppress(images).double()  # the formula the statistics used before
    torch.testing.assert_close(
        pre.offset.flatten().double(), whole.mean(dim=(0, 2, 3)), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(
        pre.divisor.flatten().double(), whole.std(dim=(0, 2, 3)), rtol=1e-6, atol=0
    )
    hits = Preprocess(
        zero_suppress=1e-4, scaling="hits", channel_scales=None, clip=None, channels=3
    )
    hits.fit(images)
    mean_hit = whole.abs().sum(dim=(0, 2, 3)) / (whole != 0).sum(dim=(0, 2, 3))
    torch.testing.assert_close(hits.divisor.flatten().double(), mean_hit, rtol=1e-6, atol=0)
    scaled = hits.scale(hits.suppress(images))
    assert torch.equal(scaled == 0, hits.suppress(images) == 0)  # zeros stay zero


def test_datamodule_reads_the_statistics_sample_in_bounded_batches(tmp_path, monkeypatch) -> None:
    cfg = compose_run(with_fast([]), tmp_path)
    dm = build_datamodule(cfg, tmp_path, DataNeeds(views=0, labelled=False, target_scaling=None))
    monkeypatch.setattr(datamodule_module, "STATS_BATCH_BYTES", 10 * 4 * 3 * 32 * 32)
    dm.setup("fit")
    batches = list(dm._train_sample())
    train = np.sort(dm.split["train"])  # fewer than STATS_SAMPLE: the sample is all of them
    assert max(len(b) for b in batches) == 10 and sum(len(b) for b in batches) == len(train)
    whole = Preprocess(
        zero_suppress=0, scaling="standard", channel_scales=None, clip=None, channels=3
    )
    whole.fit(torch.from_numpy(dm.source.read(train)))
    torch.testing.assert_close(dm.preprocess.offset, whole.offset, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dm.preprocess.divisor, whole.divisor, rtol=1e-6, atol=1e-7)


# --- 2g: scaling that does not saturate the sparse track channels -------------------------------
def test_2g_defaults_clip_a_small_share_of_hits(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from sparse_scaling_2g import OLD, clip_report, mimic_2g, new_defaults

    images = torch.from_numpy(mimic_2g(96, seed=0))
    old = clip_report(images, Preprocess(channels=8, **OLD))
    new = clip_report(images, Preprocess(channels=8, **new_defaults()))
    assert old["clipped"][:3].min() > 0.4  # the old default flattened most track hits
    assert new["clipped"].max() < 0.01
    assert ((new["typical_hit"] > 0.1) & (new["typical_hit"] < 10)).all()
