"""`ssl-embed`: embeddings of a saved split from a checkpoint, equal to the backbone's output."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ssl_lightning.data.needs import NO_NEEDS
from ssl_lightning.embed import main
from ssl_lightning.embeddings import load_run_config
from ssl_lightning.methods.simclr import SimCLR
from ssl_lightning.train import build_datamodule
from tests.conftest import FAST
from tests.helpers import compose_run


@pytest.fixture(scope="module")
def run_config(pretrained, tmp_path_factory) -> Path:
    """What Hydra writes to <run_dir>/.hydra/ for the pretrained run (in-process runs do not):
    config.yaml with its `${hydra:...}` interpolations unresolved, and hydra.yaml."""
    hydra_dir = tmp_path_factory.mktemp("run") / ".hydra"
    hydra_dir.mkdir()
    cfg = compose_run([*FAST, "method=simclr"], Path(pretrained["run_dir"]))
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": HydraConfig.get()}), hydra_dir / "hydra.yaml")
    return hydra_dir / "config.yaml"


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


def test_saved_hydra_paths_resolve_from_the_runs_hydra_yaml(run_config, monkeypatch):
    monkeypatch.delenv("SSL_LIGHTNING_DATA", raising=False)
    cfg = load_run_config(run_config, ["loader.eval_batch_size=7"])
    cwd = OmegaConf.load(run_config.with_name("hydra.yaml")).hydra.runtime.cwd
    assert cfg.paths.data_dir == f"{cwd}/data"
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
