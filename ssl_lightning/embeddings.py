"""Backbone embeddings of a run's data split, computed from one of its checkpoints.

The run folder (two levels above the checkpoint) holds the Hydra config the run used and its
saved split, so the embeddings cover exactly the samples the run called train/val/test, read and
preprocessed as in training (train-split statistics). `ssl-embed` is the command line of this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.data.datamodule import ViewsDataModule
from ssl_lightning.data.needs import NO_NEEDS
from ssl_lightning.data.splits import SPLITS
from ssl_lightning.errors import UserError
from ssl_lightning.models.backbones import load_backbone
from ssl_lightning.train import build_datamodule

CHOICES = (*SPLITS, "all")
FORMATS = (".h5", ".hdf5", ".npz")
HYDRA_INTERPOLATION = re.compile(r"\$\{hydra:([^}]+)\}")


@torch.no_grad()
def embed_indices(
    backbone: nn.Module, datamodule: ViewsDataModule, indices: np.ndarray, device: torch.device
) -> dict[str, np.ndarray]:
    """`embeddings` [N, out_dim] of the samples `indices` with their `index`, `y`, targets."""
    parts: dict[str, list[Tensor]] = {}
    dtype = next(backbone.parameters()).dtype
    for batch in datamodule.evaluation_batches(indices, device, dtype):
        columns = {"embeddings": backbone(batch["x"]).float(), "index": batch["index"]}
        if "y" in batch:
            columns["y"] = batch["y"]
        columns.update(batch["targets"])
        for name, values in columns.items():
            parts.setdefault(name, []).append(values.cpu())
    return {name: torch.cat(values).numpy() for name, values in parts.items()}


def split_indices(datamodule: ViewsDataModule, split: str) -> np.ndarray:
    """The saved split's indices; `all` is every sample of the three splits, in index order."""
    if split not in CHOICES:
        raise UserError(f"--split {split!r}: use one of {', '.join(CHOICES)}")
    if split == "all":
        return np.sort(np.concatenate([datamodule.split[name] for name in SPLITS]))
    return datamodule.split[split]


def load_run_config(config_file: Path, overrides: Sequence[str]) -> DictConfig:
    """The run's saved Hydra config with `key=value` overrides, struct mode on.

    Hydra saves `config.yaml` with `${hydra:...}` interpolations (data_dir defaults to
    `${hydra:runtime.cwd}/data`); they are replaced by the values of the run's own `hydra.yaml`
    beside it, so paths resolve as they did in the run, from any working directory.
    """
    if not config_file.is_file():
        raise UserError(
            f"run config not found: {config_file} (ssl-train writes it to <run_dir>/.hydra/): "
            "pass --config PATH to the config.yaml of the run that wrote the checkpoint"
        )
    text = config_file.read_text()
    hydra_file = config_file.with_name("hydra.yaml")
    if hydra_file.is_file():
        hydra_node = OmegaConf.load(hydra_file).hydra
        text = HYDRA_INTERPOLATION.sub(
            lambda m: str(OmegaConf.select(hydra_node, m.group(1), default=m.group(0))), text
        )
    cfg = OmegaConf.create(text)
    OmegaConf.set_struct(cfg, True)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise UserError(
            f"bad override in {' '.join(overrides)}: {str(err).splitlines()[0]} — use key=value "
            "with keys of the run's config"
        ) from None


def embed_checkpoint(
    checkpoint: str | Path,
    split: str,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of a split from a checkpoint; `config` defaults to the run's .hydra/config.yaml
    and `device` to the GPU when there is one."""
    checkpoint = Path(checkpoint).expanduser()
    run_dir = checkpoint.resolve().parent.parent
    config_file = Path(config) if config else run_dir / ".hydra" / "config.yaml"
    backbone = load_backbone(checkpoint)
    cfg = load_run_config(config_file, overrides)
    datamodule = build_datamodule(cfg, run_dir, NO_NEEDS)
    datamodule.prepare_data()
    datamodule.setup()
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return embed_indices(backbone.to(target), datamodule, split_indices(datamodule, split), target)


def check_format(out: Path) -> None:
    """Refuse an unknown output suffix before any embedding is computed."""
    if out.suffix not in FORMATS:
        raise UserError(f"--out {out}: name the file with one of {', '.join(FORMATS)}")


def write_embeddings(arrays: dict[str, np.ndarray], out: Path) -> Path:
    """HDF5 (one dataset per array) or .npz, chosen by the suffix; written atomically."""
    check_format(out)
    with replaced_atomically(out) as tmp:
        if out.suffix == ".npz":
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)
        else:
            with h5py.File(tmp, "w") as handle:
                for name, values in arrays.items():
                    handle.create_dataset(name, data=values)
    return out
