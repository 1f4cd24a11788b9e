"""Tests for the image sources: exact values against numpy ground truth, and the user errors."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from ssl_lightning.data.sources.cifar10 import CIFAR10Source
from ssl_lightning.data.sources.digits import DigitsSource
from ssl_lightning.data.sources.hdf5 import HDF5Source
from ssl_lightning.data.sources.image_folder import ImageFolderSource
from ssl_lightning.data.sources.synthetic import SyntheticSource
from ssl_lightning.data.sparse_images import write_sparse_images
from ssl_lightning.errors import UserError

# unsorted, repeated and boundary indices: what a shuffled batch sampler may ask for
ODD_INDICES = np.array([7, 2, 2, 11, 0, 5, 7, 3])


# --- synthetic --------------------------------------------------------------------------------
def test_synthetic_is_deterministic_by_seed() -> None:
    a = SyntheticSource(num_samples=64, image_size=16, channels=2, num_classes=4, seed=3)
    b = SyntheticSource(num_samples=64, image_size=16, channels=2, num_classes=4, seed=3)
    c = SyntheticSource(num_samples=64, image_size=16, channels=2, num_classes=4, seed=4)
    everything = np.arange(64)
    assert np.array_equal(a.read(everything), b.read(everything))
    assert np.array_equal(a.labels, b.labels)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.read(everything), c.read(everything))


def test_synthetic_shapes_balance_and_targets() -> None:
    src = SyntheticSource(num_samples=102, image_size=20, channels=3, num_classes=4, seed=0)
    images = src.read(ODD_INDICES)
    assert src.image_shape == (3, 20, 20) and src.channels == 3 and len(src) == 102
    assert images.shape == (8, 3, 20, 20) and images.dtype == np.float32
    assert np.array_equal(images[1], images[2]) and np.array_equal(images[0], images[6])
    assert (src.read(np.arange(102)) >= 0).all()
    counts = np.bincount(src.labels, minlength=4)
    assert src.labels.dtype == np.int64 and counts.max() - counts.min() <= 1
    assert set(src.targets) == {"size", "intensity"}
    all_images = src.read(np.arange(102)).astype(np.float64)
    assert np.allclose(src.targets["intensity"], all_images.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert all(t.dtype == np.float32 and t.shape == (102,) for t in src.targets.values())


def test_synthetic_nearest_class_mean_beats_chance() -> None:
    src = SyntheticSource(num_samples=400, image_size=16, channels=1, num_classes=4, seed=1)
    x = src.read(np.arange(400)).reshape(400, -1)
    y = src.labels
    train, test = np.arange(200), np.arange(200, 400)
    means = np.stack([x[train][y[train] == c].mean(axis=0) for c in range(4)])
    predicted = ((x[test, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == y[test]).mean() > 0.8  # chance is 0.25


# --- digits -----------------------------------------------------------------------------------
def test_digits_shape_range_labels_and_ink() -> None:
    src = DigitsSource(image_size=16, channels=3)
    raw = load_digits()
    images = src.read(np.arange(len(src)))
    assert len(src) == 1797 and images.shape == (1797, 3, 16, 16) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert np.array_equal(images[:, 0], images[:, 2])
    assert np.array_equal(src.labels, raw.target) and set(src.labels.tolist()) == set(range(10))
    assert np.allclose(src.targets["ink"], raw.images.sum(axis=(1, 2)) / 16)
    # bilinear upsampling keeps the mean level of each image (up to border effects)
    assert np.corrcoef(images[:, 0].mean(axis=(1, 2)), raw.images.mean(axis=(1, 2)))[0, 1] > 0.99


def test_digits_at_native_size_is_the_raw_data() -> None:
    src = DigitsSource(image_size=8, channels=1)
    assert np.allclose(src.read(ODD_INDICES)[:, 0], load_digits().images[ODD_INDICES] / 16)


# --- CIFAR-10 ---------------------------------------------------------------------------------
def write_cifar(root: Path, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Fake python-version batches; returns the [6*per_batch, 32, 32, 3] RGB images and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6 * per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 6 * per_batch)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        part = slice(b * per_batch, (b + 1) * per_batch)
        rows = images[part].transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R, G, B planes
        batch = {b"batch_label": name.encode(), b"data": rows, b"labels": labels[part].tolist()}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return images, labels


def test_cifar10_reads_pixels_channels_and_labels_exactly(tmp_path: Path) -> None:
    images, labels = write_cifar(tmp_path, per_batch=4)
    src = CIFAR10Source(root=str(tmp_path))
    assert len(src) == 24 and src.image_shape == (3, 32, 32) and src.targets == {}
    got = src.read(ODD_INDICES)
    assert got.dtype == np.float32
    expected = images[ODD_INDICES].transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert np.array_equal(got, expected)
    assert np.array_equal(src.labels, labels) and src.labels.dtype == np.int64
    assert src.fingerprint() == CIFAR10Source(root=str(tmp_path)).fingerprint()


def test_cifar10_missing_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar-10-batches-py/data_batch_1..5") as err:
        CIFAR10Source(root=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)
    write_cifar(tmp_path, per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError, match="missing: test_batch"):
        CIFAR10Source(root=str(tmp_path))


def test_cifar10_corrupt_batch_is_a_user_error(tmp_path: Path) -> None:
    write_cifar(tmp_path, per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3 is not a python-version batch"):
        CIFAR10Source(root=str(tmp_path))


# --- image folder -----------------------------------------------------------------------------
def test_image_folder_labels_from_folder_names_and_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = {}
    for name, count in (("zebra", 2), ("ant", 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            suffix = ".PNG" if i == 0 else ".png"  # extensions are case-insensitive
            Image.fromarray(array).save(tmp_path / name / f"img{i}{suffix}")
            pixels[(name, i)] = array
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    src = ImageFolderSource(root=str(tmp_path), image_size=8, channels=3)
    assert src.class_names == ["ant", "zebra"] and len(src) == 5
    assert src.labels.tolist() == [0, 0, 0, 1, 1]
    got = src.read(np.array([4, 0, 4]))
    assert got.shape == (3, 3, 8, 8) and got.dtype == np.float32
    assert np.allclose(got[0], pixels[("zebra", 1)].transpose(2, 0, 1) / 255)
    assert np.allclose(got[1], pixels[("ant", 0)].transpose(2, 0, 1) / 255)
    assert np.array_equal(got[0], got[2])
    grey = ImageFolderSource(root=str(tmp_path), image_size=4, channels=1).read(np.arange(5))
    assert grey.shape == (5, 1, 4, 4) and grey.min() >= 0 and grey.max() <= 1


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist: set dataset.source.root"):
        ImageFolderSource(root=str(tmp_path / "missing"), image_size=8, channels=3)
    with pytest.raises(UserError, match="has no class subfolders"):
        ImageFolderSource(root=str(tmp_path), image_size=8, channels=3)
    (tmp_path / "cats").mkdir()
    with pytest.raises(UserError, match="has no images"):
        ImageFolderSource(root=str(tmp_path), image_size=8, channels=3)
    with pytest.raises(UserError, match="set dataset.channels=1 or 3"):
        ImageFolderSource(root=str(tmp_path), image_size=8, channels=2)
    (tmp_path / "cats" / "broken.png").write_bytes(b"not an image")
    src = ImageFolderSource(root=str(tmp_path), image_size=8, channels=3)
    with pytest.raises(UserError, match="cannot decode image .*broken.png"):
        src.read(np.array([0]))


# --- HDF5 -------------------------------------------------------------------------------------
# how the images are stored and read: contiguous (memory-mapped), chunked+compressed (through
# h5py), or loaded whole (in_memory)
STORAGES = [("contiguous", False), ("chunked", False), ("contiguous", True)]


def create(f: h5py.Group, key: str, data: np.ndarray, storage: str) -> None:
    if storage == "chunked":
        f.create_dataset(key, data=data, chunks=True, compression="gzip")
    else:
        f.create_dataset(key, data=data)


def write_e2e(
    path: Path, storage: str = "contiguous", n: int = 12, seed: int = 0
) -> dict[str, np.ndarray]:
    """A small file in the E2E quark/gluon layout: X_jets (N, H, W, 3), y as float 0/1, pt, m0."""
    rng = np.random.default_rng(seed)
    data = {
        "X_jets": rng.random((n, 10, 9, 3), dtype=np.float32),
        "y": rng.integers(0, 2, n).astype(np.float32),
        "pt": rng.uniform(50, 500, n),
        "m0": rng.uniform(0, 30, n).astype(np.float32),
    }
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            create(f, key, value, storage)
    return data


def e2e_source(path: Path, in_memory: bool = False) -> HDF5Source:
    return HDF5Source(
        path=str(path),
        image_key="X_jets",
        layout="channels_last",
        label_key="y",
        target_keys=["pt", "m0"],
        in_memory=in_memory,
    )


@pytest.mark.parametrize(("storage", "in_memory"), STORAGES)
def test_hdf5_channels_last_reads_any_index_order(
    tmp_path: Path, storage: str, in_memory: bool
) -> None:
    data = write_e2e(tmp_path / "jets.h5", storage)
    src = e2e_source(tmp_path / "jets.h5", in_memory)
    truth = data["X_jets"].transpose(0, 3, 1, 2)
    assert src.image_shape == (3, 10, 9) and len(src) == 12
    for indices in (ODD_INDICES, np.arange(12), np.array([11]), np.array([4, 4, 4])):
        got = src.read(indices)
        # channels-last in memory, as the file and channels-last training have them
        assert got.dtype == np.float32 and got.transpose(0, 2, 3, 1).flags.c_contiguous
        assert np.array_equal(got, truth[indices])
    assert src.read(np.array([], dtype=np.int64)).shape == (0, 3, 10, 9)
    assert src.labels.dtype == np.int64 and np.array_equal(src.labels, data["y"])
    assert src.targets["pt"].dtype == np.float32
    assert np.allclose(src.targets["pt"], data["pt"]) and np.array_equal(
        src.targets["m0"], data["m0"]
    )


@pytest.mark.parametrize("storage", ["contiguous", "chunked"])
def test_hdf5_channels_first_unlabelled(tmp_path: Path, storage: str) -> None:
    images = np.random.default_rng(1).normal(size=(9, 2, 5, 6))  # float64 on disk
    with h5py.File(tmp_path / "cf.h5", "w") as f:
        create(f, "images", images, storage)
    src = HDF5Source(str(tmp_path / "cf.h5"), "images", "channels_first", None, [], False)
    assert src.image_shape == (2, 5, 6) and src.labels is None and src.targets == {}
    assert np.array_equal(
        src.read(ODD_INDICES[ODD_INDICES < 9]), images[[7, 2, 2, 0, 5, 7, 3]].astype(np.float32)
    )


@pytest.mark.parametrize(("storage", "in_memory"), STORAGES)
def test_hdf5_sparse_round_trip(tmp_path: Path, storage: str, in_memory: bool) -> None:
    rng = np.random.default_rng(2)
    dense = rng.random((15, 3, 12, 12), dtype=np.float32)
    dense[dense < 0.9] = 0
    dense[4] = 0  # an empty image
    with h5py.File(tmp_path / "sparse.h5", "w") as f:
        write_sparse_images(f.create_group("X_jets"), dense)
        f["y"] = np.arange(15) % 2
    if storage == "chunked":  # same format, rewritten chunked and compressed
        with h5py.File(tmp_path / "sparse.h5", "a") as f:
            parts = {part: f["X_jets"][part][()] for part in ("indptr", "index", "value")}
            group = f.create_group("chunked")
            for part, values in parts.items():
                create(group, part, values, storage)
            group.attrs["shape"] = f["X_jets"].attrs["shape"]
            del f["X_jets"]
            f.move("chunked", "X_jets")
    src = HDF5Source(str(tmp_path / "sparse.h5"), "X_jets", "channels_last", "y", [], in_memory)
    assert src.files[0].sparse and src.image_shape == (3, 12, 12) and len(src) == 15
    for indices in (np.array([14, 4, 3, 4, 0, 1, 2, 9, 9]), np.arange(15), np.array([4])):
        assert np.array_equal(src.read(indices), dense[indices])


@pytest.mark.parametrize("storage", ["contiguous", "chunked"])
def test_hdf5_source_pickles_after_a_read(tmp_path: Path, storage: str) -> None:
    data = write_e2e(tmp_path / "jets.h5", storage)
    src = e2e_source(tmp_path / "jets.h5")
    first = src.read(ODD_INDICES)
    clone = pickle.loads(pickle.dumps(src))
    assert np.array_equal(clone.read(ODD_INDICES), first)
    assert np.array_equal(clone.labels, data["y"]) and clone.fingerprint() == src.fingerprint()


def _read_in_child(src: HDF5Source, queue: multiprocessing.Queue) -> None:
    queue.put(src.read(ODD_INDICES))


@pytest.mark.parametrize("storage", ["contiguous", "chunked"])
def test_hdf5_source_reads_in_a_forked_child_after_a_parent_read(
    tmp_path: Path, storage: str
) -> None:
    write_e2e(tmp_path / "jets.h5", storage)
    src = e2e_source(tmp_path / "jets.h5")
    expected = src.read(ODD_INDICES)  # the parent holds an open handle when it forks
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(src, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0 and np.array_equal(got, expected)
    assert np.array_equal(src.read(ODD_INDICES), expected)  # the parent reopens after the fork


def test_hdf5_missing_file_and_keys(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="HDF5 file not found: .*set dataset.source.path"):
        e2e_source(tmp_path / "absent.h5")
    write_e2e(tmp_path / "jets.h5")
    path = str(tmp_path / "jets.h5")
    with pytest.raises(
        UserError, match=r"no dataset 'X_jet'; available: .*X_jets.* set dataset.source.image_key"
    ):
        HDF5Source(path, "X_jet", "channels_last", "y", [], False)
    with pytest.raises(UserError, match="no dataset 'label'.*set dataset.source.label_key"):
        HDF5Source(path, "X_jets", "channels_last", "label", [], False)
    with pytest.raises(UserError, match="no dataset 'eta'.*set dataset.source.target_keys"):
        HDF5Source(path, "X_jets", "channels_last", "y", ["pt", "eta"], False)
    with pytest.raises(UserError, match="not a layout: use channels_last .* or channels_first"):
        HDF5Source(path, "X_jets", "NHWC", "y", [], False)
    (tmp_path / "text.h5").write_text("plain text")
    with pytest.raises(UserError, match="cannot open .*text.h5 as HDF5"):
        HDF5Source(str(tmp_path / "text.h5"), "X_jets", "channels_last", "y", [], False)


def test_hdf5_wrong_layout_shape_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["cf"] = np.zeros((4, 3, 32, 32), dtype=np.float32)
        f["cl"] = np.zeros((4, 32, 32, 3), dtype=np.float32)
        f["flat"] = np.zeros((4, 32, 32), dtype=np.float32)
        f["half"] = np.array([0, 1, 0.5, 1])
        f["short"] = np.array([0, 1, 1])
        f["negative"] = np.array([0, -1, 1, 1])
        f.create_group("group").create_dataset("a", data=np.zeros(4))
    with pytest.raises(
        UserError, match="looks channels-first.*set dataset.source.layout=channels_"
    ):
        HDF5Source(str(path), "cf", "channels_last", None, [], False)
    with pytest.raises(UserError, match="looks channels-last.*layout=channels_last"):
        HDF5Source(str(path), "cl", "channels_first", None, [], False)
    with pytest.raises(UserError, match=r"shape \(4, 32, 32\), but images must be 4-D"):
        HDF5Source(str(path), "flat", "channels_last", None, [], False)
    with pytest.raises(UserError, match="non-integer labels .*0.5"):
        HDF5Source(str(path), "cl", "channels_last", "half", [], False)
    with pytest.raises(UserError, match="'short' .* shape \\(3,\\) but there are 4 images"):
        HDF5Source(str(path), "cl", "channels_last", None, ["short"], False)
    with pytest.raises(UserError, match="negative labels"):
        HDF5Source(str(path), "cl", "channels_last", "negative", [], False)
    with pytest.raises(UserError, match="'group' .* is not a sparse image group.*group/a"):
        HDF5Source(str(path), "group", "channels_last", None, [], False)


def test_write_sparse_images_format(tmp_path: Path) -> None:
    dense = np.zeros((3, 2, 2, 2), dtype=np.float32)
    dense[0, 1, 0, 1] = 5.0  # flat channels-first index 1*4 + 0*2 + 1 = 5
    dense[2, 0, 0, 0] = -1.5
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_sparse_images(f.create_group("g"), dense)
        g = f["g"]
        assert g["indptr"][()].tolist() == [0, 1, 1, 2] and g["indptr"].dtype == np.int64
        assert g["index"][()].tolist() == [5, 0] and g["index"].dtype == np.int32
        assert g["value"][()].tolist() == [5.0, -1.5] and g["value"].dtype == np.float32
        assert tuple(g.attrs["shape"]) == (2, 2, 2)
