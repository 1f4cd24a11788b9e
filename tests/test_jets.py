"""Tests for `ssl-make-jets`: quark/gluon physics, determinism, atomic writes, sparse storage, CLI.

Pythia makes ~40 jets per CPU-second, so the physics sample (1,000 jets) is generated once per
module and everything else uses a handful of jets.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_lightning.data.sparse_images import write_sparse_images
from ssl_lightning.errors import UserError
from ssl_lightning.generator import JetGenConfig, config_fingerprint, generate_jets, main
from ssl_lightning.generator.physics import EventGenerator

PER_JET = ("y", "pt", "m0", "nconst", "eta", "phi")


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in ("X_jets", *PER_JET)}


def densify(group: h5py.Group) -> np.ndarray:
    """float32 [N, C, H, W] from the sparse layout, written out independently of the reader."""
    indptr, index, value = (group[part][()] for part in ("indptr", "index", "value"))
    shape = tuple(group.attrs["shape"])
    out = np.zeros((len(indptr) - 1, int(np.prod(shape))), dtype=np.float32)
    for i in range(len(out)):
        out[i, index[indptr[i] : indptr[i + 1]]] = value[indptr[i] : indptr[i + 1]]
    return out.reshape(len(out), *shape)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, np.ndarray]:
    """1,000 jets at the defaults (32x32, pT 500-550 GeV), made with 2 worker processes."""
    out = tmp_path_factory.mktemp("jets") / "jets.h5"
    generate_jets(JetGenConfig(num_jets=1000, seed=11), out, workers=2, progress=False)
    return read(out)


# --- physics ----------------------------------------------------------------------------------
def test_selection_and_balance(sample) -> None:
    config = JetGenConfig(num_jets=1000, seed=11)
    assert sample["X_jets"].shape == (1000, 32, 32, 3) and sample["X_jets"].dtype == np.float32
    assert np.sum(sample["y"] == 1) == np.sum(sample["y"] == 0) == 500
    assert set(np.unique(sample["y"]).tolist()) == {0.0, 1.0}
    assert np.all((sample["pt"] >= config.pt_min) & (sample["pt"] < config.pt_max))
    assert np.all(np.abs(sample["eta"]) < config.eta_max)
    assert np.all(np.abs(sample["phi"]) <= np.pi)
    assert np.all(sample["m0"] > 0) and np.all(sample["nconst"] > 0)
    # classes are mixed through the file, not one block after the other
    assert 0.3 < sample["y"][:200].mean() < 0.7


def test_gluon_jets_have_more_constituents(sample) -> None:
    quark = sample["y"] == 1
    nconst = sample["nconst"]
    assert nconst[~quark].mean() > nconst[quark].mean()
    assert roc_auc_score(~quark, nconst) >= 0.75  # measured 0.83 in the 500-550 GeV window
    # the pT window keeps pT from separating the classes (0.615 without it)
    assert roc_auc_score(quark, sample["pt"]) < 0.6


def test_images_hold_the_constituent_pt(sample) -> None:
    images = sample["X_jets"]
    assert np.all(images >= 0)
    assert np.all(images.sum(axis=(0, 1, 2)) > 0)  # every channel is used
    assert np.all(images[..., 0].sum(axis=(1, 2)) > 0)  # every jet has tracks
    ratio = images.sum(axis=(1, 2, 3)) / sample["pt"]
    # scalar pT sum of the constituents on the grid: a little above the jet's (vector) pT at
    # most, below it only when constituents fall outside the +-0.4 grid
    assert np.all(ratio <= 1.03)
    assert np.mean(ratio > 0.98) > 0.95
    # jets next to phi = +-pi keep the constituents on the other side of the wrap-around
    near_wrap = np.abs(sample["phi"]) > np.pi - 0.4
    assert near_wrap.sum() > 20 and np.all(ratio[near_wrap] > 0.9)
    # the jet axis is the image centre: the central 4x4 pixels carry a large share of the pT
    centre = images[:, 14:18, 14:18].sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.median(centre) > 0.5


# --- reproducibility and files ----------------------------------------------------------------
def test_same_seed_same_arrays_whatever_the_workers(tmp_path) -> None:
    config = JetGenConfig(num_jets=16, seed=3)
    one = read(generate_jets(config, tmp_path / "one.h5", workers=1, progress=False))
    two = read(generate_jets(config, tmp_path / "two.h5", workers=2, progress=False))
    for key in one:
        assert np.array_equal(one[key], two[key]), key
    other = read(
        generate_jets(JetGenConfig(num_jets=2, seed=4), tmp_path / "other.h5", progress=False)
    )
    assert not np.isin(other["pt"], one["pt"]).any()


def test_attributes_record_seed_settings_and_versions(tmp_path) -> None:
    config = JetGenConfig(num_jets=4, seed=5, pt_min=500, pt_max=550.0)
    out = generate_jets(config, tmp_path / "jets.h5", progress=False, command="make it")
    with h5py.File(out, "r") as f:
        attrs = dict(f.attrs)
    assert attrs["seed"] == 5 and attrs["num_jets"] == 4
    for key in ("image_size", "pixel_width", "pt_min", "pt_max", "eta_max", "pthat_min"):
        assert attrs[key] == getattr(config, key)
    assert attrs["command"] == "make it"
    assert attrs["pythia8_version"] == "8.317.2" and attrs["fastjet_version"]
    assert "WeakBosonAndParton:qg2gmZq = on" in attrs["pythia_settings_quark"]
    assert attrs["fingerprint"] == config_fingerprint(config)
    # the fingerprint follows the settings, and 500 == 500.0
    assert config_fingerprint(config) == config_fingerprint(JetGenConfig(4, 5, pt_min=500.0))
    assert config_fingerprint(config) != config_fingerprint(JetGenConfig(4, 6))
    assert config_fingerprint(config) != config_fingerprint(JetGenConfig(4, 5, image_size=16))


def test_failed_run_leaves_no_file(tmp_path, monkeypatch) -> None:
    real_chunk = EventGenerator.chunk
    calls = []

    def chunk_then_fail(self, *args):
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("generator died")
        return real_chunk(self, *args)

    monkeypatch.setattr(EventGenerator, "chunk", chunk_then_fail)
    out = tmp_path / "jets.h5"
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="generator died"):
        generate_jets(JetGenConfig(num_jets=4, seed=1), out, workers=1, progress=False)
    assert out.read_bytes() == b"previous"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jets.h5"]  # no temporary file left


def test_large_images_are_stored_sparse(tmp_path) -> None:
    config = JetGenConfig(num_jets=8, seed=2, image_size=125, pixel_width=0.0174)
    sparse = generate_jets(config, tmp_path / "sparse.h5", progress=False)  # auto: > 64 pixels
    dense = generate_jets(config, tmp_path / "dense.h5", progress=False, sparse="no")
    with h5py.File(sparse, "r") as f, h5py.File(dense, "r") as g:
        group = f["X_jets"]
        assert isinstance(group, h5py.Group)
        assert tuple(group.attrs["shape"]) == (3, 125, 125)
        assert group["indptr"].dtype == np.int64 and group["index"].dtype == np.int32
        assert group["value"].dtype == np.float32
        images = densify(group)
        truth = g["X_jets"][()]
        sparse_parts = {part: group[part][()] for part in ("indptr", "index", "value")}
        assert np.array_equal(f["pt"][()], g["pt"][()])
    assert truth.shape == (8, 125, 125, 3)
    assert np.array_equal(images, truth.transpose(0, 3, 1, 2))
    assert np.all(images >= 0) and np.all(images.sum(axis=(1, 2, 3)) > 0)
    # byte for byte the layout of the format's own writer
    with h5py.File(tmp_path / "reference.h5", "w") as f:
        write_sparse_images(f.create_group("X_jets"), images)
        for part, data in sparse_parts.items():
            assert np.array_equal(f["X_jets"][part][()], data), part


# --- user errors and the command line ---------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_jets": 7}, "even"),
        ({"num_jets": 0}, "even"),
        ({"seed": -1}, "seed"),
        ({"image_size": 0}, "image_size"),
        ({"pixel_width": 0.0}, "pixel_width"),
        ({"pt_min": 600.0}, "window"),
        ({"pthat_min": 600.0, "pthat_max": 500.0}, "pthat"),
        ({"eta_max": "2.5"}, "eta_max"),
    ],
)
def test_bad_settings_are_user_errors(settings, message) -> None:
    with pytest.raises(UserError, match=message):
        JetGenConfig(**{"num_jets": 10, "seed": 0, **settings})


def test_bad_output_and_options_are_user_errors(tmp_path) -> None:
    config = JetGenConfig(num_jets=2, seed=0)
    with pytest.raises(UserError, match="does not exist"):
        generate_jets(config, tmp_path / "missing" / "jets.h5", progress=False)
    with pytest.raises(UserError, match="folder"):
        generate_jets(config, tmp_path, progress=False)
    with pytest.raises(UserError, match="workers"):
        generate_jets(config, tmp_path / "jets.h5", workers=0, progress=False)
    with pytest.raises(UserError, match="sparse"):
        generate_jets(config, tmp_path / "jets.h5", sparse="maybe", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_odd_number_of_jets_exits_2(tmp_path, capsys) -> None:
    out = tmp_path / "jets.h5"
    with pytest.raises(SystemExit) as exit_info:
        main(["--num-jets", "7", "--seed", "0", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: num_jets=7") and err.count("\n") == 1
    assert not out.exists()


def test_cli_unwritable_folder_exits_2(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--num-jets", "2", "--seed", "0", "--out", str(tmp_path / "no" / "jets.h5")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: output folder")


def test_cli_help_lists_options_with_defaults(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--num-jets", "--image-size", "--pixel-width", "--workers", "--sparse"):
        assert option in text
    assert "default: 0.025" in text and "default: 500.0" in text


def test_cli_writes_the_file_and_its_command(tmp_path, capsys) -> None:
    out = tmp_path / "jets.h5"
    main(["--num-jets", "2", "--seed", "1", "--out", str(out), "--image-size", "16"])
    assert f"wrote 2 jets to {out}" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f["X_jets"].shape == (2, 16, 16, 3)
        assert f.attrs["command"].startswith("ssl-make-jets --num-jets 2 --seed 1")
