"""`ssl-embed`: embeddings of a saved split from a checkpoint, equal to the backbone's output;
another dataset is embedded on its own split."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ssl_lightning.data.needs import NO_NEEDS
from ssl_lightning.data.splits import make_split
from ssl_lightning.embed import main
from ssl_lightning.embeddings import load_run_config
from ssl_lightning.methods.simclr import SimCLR
from ssl_lightning.train import build_datamodule
from tests.conftest import FAST
from tests.helpers import compose_run
from tests.test_evaluate import save_hydra_files


@pytest.fixture(scope="module")
def run_config(pretrained, tmp_path_factory) -> Path:
    """What Hydra writes to <run_dir>/.hydra/ for the pretrained run (in-process runs do not)."""
    cfg = compose_run([*FAST, "method=simclr"], Path(pretrained["run_dir"]))
    return save_hydra_files(cfg, tmp_path_factory.mktemp("run") / ".hydra")


@pytest.fixture(scope="module")
def reference(pretrained, run_config):
    """The run's data module and its SimCLR model, built the way training built them."""
    cfg = load_run_config(run_config, [])
    model = SimCLR.load_from_checkpoint(pretrained["checkpoints"]["last"]).eval()
    datamodule = build_datamodule(cfg, Path(pretrained["run_dir"]), NO_NEEDS)
    datamodule.setup()
    return datamodule, model


def embed(pretrained, run_config, out: Path, *args: str) -> None:
    main(
        [
            "--checkpoint",
            pretrained["checkpoints"]["last"],
            "--config",
            str(run_config),
            "--out",
            str(out),
            "--device",
            "cpu",
            *args,
        ]
    )


def test_hdf5_holds_the_val_split_with_labels_targets_and_backbone_outputs(
    pretrained, run_config, reference, tmp_path
):
    datamodule, model = reference
    embed(pretrained, run_config, tmp_path / "val.h5", "--split", "val")
    with h5py.File(tmp_path / "val.h5") as handle:
        arrays = {name: handle[name][()] for name in handle}
    source, val = datamodule.source, datamodule.split["val"]
    assert set(arrays) == {"embeddings", "index", "y", *source.targets}
    assert arrays["embeddings"].shape == (len(val), model.backbone.out_dim)
    np.testing.assert_array_equal(arrays["index"], val)
    np.testing.assert_array_equal(arrays["y"], source.labels[val])
    for name, values in source.targets.items():
        np.testing.assert_array_equal(arrays[name], values[val])
    # recompute a batch through the training code path: the validation loader + its transfer hook
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    with torch.no_grad():
        expected = model.backbone(batch["x"][:8]).numpy()
    rows = np.searchsorted(arrays["index"], batch["index"][:8].numpy())
    np.testing.assert_allclose(arrays["embeddings"][rows], expected, rtol=1e-5, atol=1e-6)


def test_npz_of_all_splits_covers_every_sample_once(pretrained, run_config, reference, tmp_path):
    datamodule, _ = reference
    embed(pretrained, run_config, tmp_path / "all.npz", "--split", "all")
    arrays = np.load(tmp_path / "all.npz")
    np.testing.assert_array_equal(arrays["index"], np.arange(len(datamodule.source)))
    assert arrays["embeddings"].shape[0] == len(datamodule.source)
    assert np.isfinite(arrays["embeddings"]).all()


def test_saved_config_resolves_from_the_runs_hydra_yaml_and_the_users_data_folder(
    run_config, monkeypatch, tmp_path
):
    monkeypatch.delenv("SSL_LIGHTNING_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = load_run_config(run_config, ["loader.eval_batch_size=7"])
    assert cfg.task_name == "simclr"  # ${hydra:runtime.choices.method}, from hydra.yaml
    assert cfg.paths.data_dir == f"{tmp_path}/ssl-lightning"  # wherever the command starts
    assert cfg.loader.eval_batch_size == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--checkpoint": "missing.ckpt"}, "checkpoint not found"),
        ({"--config": "missing.yaml"}, "run config not found"),
        ({"--out": "emb.csv"}, "name the file with one of"),
        ({"override": "data.no_such_key=1"}, "bad override"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    pretrained, run_config, tmp_path, capsys, change, message
):
    args = {
        "--checkpoint": pretrained["checkpoints"]["last"],
        "--config": str(run_config),
        "--out": str(tmp_path / "emb.npz"),
    }
    args.update({k: str(tmp_path / v) for k, v in change.items() if k.startswith("--")})
    argv = [item for pair in args.items() for item in pair] + [change.get("override", "seed=0")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_another_dataset_is_embedded_on_its_own_split(pretrained, run_config, tmp_path, capsys):
    """The blob-pretrained backbone on scikit-learn's digits: the digits' test split, saved
    beside the output, not the checkpoint's split."""
    out = tmp_path / "digits.h5"
    embed(pretrained, run_config, out, "--dataset", "digits")
    expected = make_split(1797, 0.1, 0.1, 0)["test"]
    np.testing.assert_array_equal(np.load(tmp_path / "digits.split.npz")["test"], expected)
    with h5py.File(out) as handle:
        np.testing.assert_array_equal(handle["index"][()], expected)
        np.testing.assert_array_equal(handle["y"][()], load_digits().target[expected])
        assert np.isfinite(handle["embeddings"][()]).all()
    assert "split of digits (not the checkpoint's)" in capsys.readouterr().out


def test_a_dataset_with_other_channels_is_one_line_and_exit_status_2(
    pretrained, run_config, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        embed(
            pretrained,
            run_config,
            tmp_path / "emb.h5",
            "--dataset",
            "e2e_2g",
            f"dataset.source.path={tmp_path / 'jets_2g.h5'}",
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "takes 3-channel images but dataset e2e_2g has dataset.channels=8" in err
    assert err.count("\n") == 1
