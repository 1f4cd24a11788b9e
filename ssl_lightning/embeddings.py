"""Backbone embeddings of a dataset split from a checkpoint, and the one loader of a checkpoint
with its data that `ssl-embed` and `ssl-eval` share.

The run folder (two levels above the checkpoint) holds the Hydra config the run used and its
saved split, so by default the samples are exactly those the run called train/val/test, read and
preprocessed as in training (train-split statistics). Another dataset (`--dataset NAME` and/or
`dataset.*` overrides: a backbone pretrained on one file applied to another) gets the split of
that data, made from its own fractions and `split_seed` and saved beside the output, never the
checkpoint's split, whose indices mean nothing for other data.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.data.datamodule import ViewsDataModule
from ssl_lightning.data.needs import NO_NEEDS
from ssl_lightning.data.splits import SPLITS
from ssl_lightning.errors import UserError
from ssl_lightning.models.backbones import load_backbone
from ssl_lightning.train import build_datamodule, compose_run

CHOICES = (*SPLITS, "all")
FORMATS = (".h5", ".hdf5", ".npz")  # what ssl-embed writes; `write_arrays` also writes .csv
HYDRA_INTERPOLATION = re.compile(r"\$\{hydra:([^}]+)\}")
# the dataset keys that decide which samples exist and how they split: the same as the run's
# means the run's own split applies
SPLIT_KEYS = ("name", "source", "val_fraction", "test_fraction", "split_seed")


@dataclass(frozen=True)
class CheckpointData:
    """A checkpoint's backbone (eval mode, on the CPU) with the data to apply it to."""

    backbone: nn.Module
    cfg: DictConfig  # the run's config with the dataset choice and overrides applied
    datamodule: ViewsDataModule  # set up: split made or loaded, preprocessing fitted
    split_file: Path  # the run's split.npz, or the other data's own split beside the output
    own_split: bool  # whether the samples and split are the run's


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
    """The split's indices; `all` is every sample of the three splits, in index order."""
    if split not in CHOICES:
        raise UserError(f"--split {split!r}: use one of {', '.join(CHOICES)}")
    if split == "all":
        return np.sort(np.concatenate([datamodule.split[name] for name in SPLITS]))
    return datamodule.split[split]


def load_run_config(
    config_file: Path, overrides: Sequence[str] = (), dataset: str | None = None
) -> DictConfig:
    """The run's saved Hydra config, struct mode on, with its dataset replaced by the `dataset`
    group's config `dataset` when given, then `key=value` overrides.

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
    if dataset:
        with open_dict(cfg):
            cfg.dataset = dataset_config(dataset, config_file.parent)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise UserError(
            f"bad override in {' '.join(overrides)}: {str(err).splitlines()[0]} — use key=value "
            "with keys of the run's config (--dataset NAME picks another dataset config)"
        ) from None


def dataset_config(name: str, output_dir: Path) -> DictConfig:
    """The `dataset` group's config `name` as `ssl-train dataset=<name>` composes it, with its
    interpolations (`${paths.data_dir}`, ...) left to resolve in the config it joins."""
    try:
        return compose_run([f"dataset={name}"], output_dir).dataset
    except MissingConfigException as err:
        options = ", ".join(option for option in err.options or () if option != "base")
        raise UserError(
            f"--dataset {name}: no such dataset config; choose one of {options}"
        ) from None


def same_data(run_cfg: DictConfig, cfg: DictConfig) -> bool:
    """Whether `cfg` reads the run's samples and splits them as the run did."""

    def split_keys(node: DictConfig) -> dict:
        dataset = OmegaConf.to_container(node.dataset, resolve=True)
        return {key: dataset[key] for key in SPLIT_KEYS}

    return split_keys(run_cfg) == split_keys(cfg)


def backbone_channels(backbone: nn.Module) -> int:
    """The input channels a backbone takes: those of its first convolution."""
    return next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels


def load_checkpoint_data(
    checkpoint: str | Path,
    out: Path,
    config: str | Path | None = None,
    dataset: str | None = None,
    overrides: Sequence[str] = (),
) -> CheckpointData:
    """A checkpoint's backbone and the data to apply it to, set up; `config` defaults to the
    run's .hydra/config.yaml. Data other than the run's is split by its own settings into
    `<out stem>.split.npz` beside `out` (reused, and checked against the data, on a rerun)."""
    checkpoint = Path(checkpoint).expanduser()
    run_dir = checkpoint.resolve().parent.parent
    config_file = Path(config) if config else run_dir / ".hydra" / "config.yaml"
    backbone = load_backbone(checkpoint)
    run_cfg = load_run_config(config_file)
    cfg = load_run_config(config_file, overrides, dataset)
    channels, wanted = cfg.dataset.channels, backbone_channels(backbone)
    if channels != wanted:
        raise UserError(
            f"{checkpoint} takes {wanted}-channel images but dataset {cfg.dataset.name} has "
            f"dataset.channels={channels}: apply it to {wanted}-channel data, or use a checkpoint "
            f"trained on {channels} channels"
        )
    missing = sorted(OmegaConf.missing_keys(cfg.dataset))
    if missing:
        keys = " ".join(f"dataset.{key}=..." for key in missing)
        raise UserError(f"dataset {cfg.dataset.name} needs {keys}: add it to the command")
    datamodule = build_datamodule(cfg, run_dir, NO_NEEDS)
    own_split = same_data(run_cfg, cfg)
    if not own_split:
        datamodule.split_file = out.with_name(f"{out.stem}.split.npz")
    datamodule.prepare_data()
    datamodule.setup()
    return CheckpointData(backbone, cfg, datamodule, datamodule.split_file, own_split)


def pick_device(device: str | None) -> torch.device:
    """`device`, or the GPU when there is one."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def embed_checkpoint(
    checkpoint: str | Path,
    split: str,
    out: Path,
    config: str | Path | None = None,
    dataset: str | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> tuple[dict[str, np.ndarray], CheckpointData]:
    """Embeddings of a split from a checkpoint, and the data they come from."""
    data = load_checkpoint_data(checkpoint, out, config, dataset, overrides)
    target = pick_device(device)
    indices = split_indices(data.datamodule, split)
    return embed_indices(data.backbone.to(target), data.datamodule, indices, target), data


def check_format(out: Path, formats: Sequence[str] = FORMATS) -> None:
    """Refuse an unknown output suffix before anything is computed."""
    if out.suffix not in formats:
        raise UserError(f"--out {out}: name the file with one of {', '.join(formats)}")


def write_embeddings(arrays: dict[str, np.ndarray], out: Path) -> Path:
    """The embeddings as HDF5 or .npz, chosen by the suffix; written atomically."""
    check_format(out)
    return write_arrays(arrays, out)


def write_arrays(arrays: dict[str, np.ndarray], out: Path) -> Path:
    """Per-sample arrays as HDF5 (one dataset per array), .npz or .csv (one column per array,
    `<name>_<j>` for each column of a 2-D array), chosen by the suffix; written atomically."""
    with replaced_atomically(out) as tmp:
        if out.suffix == ".npz":
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)
        elif out.suffix == ".csv":
            with tmp.open("w", newline="") as handle:
                write_csv(arrays, handle)
        else:
            with h5py.File(tmp, "w") as handle:
                for name, values in arrays.items():
                    handle.create_dataset(name, data=values)
    return out


def write_csv(arrays: dict[str, np.ndarray], handle) -> None:
    """One row per sample; floats with 9 significant digits, which round-trip float32."""
    columns: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        if values.ndim == 1:
            columns[name] = values
        else:
            columns.update({f"{name}_{j}": values[:, j] for j in range(values.shape[1])})
    text = [
        values.astype(str) if values.dtype.kind in "iub" else np.char.mod("%.9g", values)
        for values in columns.values()
    ]
    writer = csv.writer(handle)
    writer.writerow(columns)
    writer.writerows(zip(*text, strict=True))
