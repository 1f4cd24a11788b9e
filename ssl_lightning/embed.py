"""`ssl-embed`: backbone embeddings of a dataset split, from a checkpoint, for use elsewhere.

    ssl-embed --checkpoint outputs/simclr/<run>/checkpoints/last.ckpt --split test --out emb.h5

The run folder (two levels above the checkpoint) holds the Hydra config the run used and its
saved split, so the embeddings cover exactly the samples the run called train/val/test, read and
preprocessed as in training (train-split statistics). `evaluation_batches` is also how the
monitoring callbacks read samples: clean images only, no views.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from ssl_lightning.data.batching import BatchReader
from ssl_lightning.data.datamodule import ViewsDataModule
from ssl_lightning.data.splits import SPLITS
from ssl_lightning.errors import UserError
from ssl_lightning.models.registry import build_backbone, read_checkpoint

CHOICES = (*SPLITS, "all")
FORMATS = (".h5", ".hdf5", ".npz")
HYDRA_INTERPOLATION = re.compile(r"\$\{hydra:([^}]+)\}")


def evaluation_batches(
    datamodule: ViewsDataModule, indices: np.ndarray, device: torch.device, dtype: torch.dtype
) -> Iterator[dict]:
    """Batches of `indices` in order, on `device`, as evaluation sees them: `image` (raw after
    zero-suppression, physical units), `x` (preprocessed), `index`, `y`, `targets`.

    Mirrors ViewsDataModule.on_after_batch_transfer without the views, which cost an augmentation
    pass per view and are not needed to embed a sample.
    """
    reader = BatchReader(datamodule.source)
    for start in range(0, len(indices), datamodule.eval_batch_size):
        batch = reader[indices[start : start + datamodule.eval_batch_size]]
        batch = {
            key: {k: v.to(device) for k, v in value.items()}
            if isinstance(value, dict)
            else value.to(device)
            for key, value in batch.items()
        }
        batch["image"] = datamodule.preprocess.suppress(batch["image"])
        # the model's own dtype: outside a training step no precision plugin converts the input
        batch["x"] = datamodule.preprocess.scale(batch["image"]).to(dtype)
        yield batch


@torch.no_grad()
def embed_indices(
    backbone: nn.Module, datamodule: ViewsDataModule, indices: np.ndarray, device: torch.device
) -> dict[str, np.ndarray]:
    """`embeddings` [N, out_dim] of the samples `indices` with their `index`, `y`, targets."""
    parts: dict[str, list[Tensor]] = {}
    dtype = next(backbone.parameters()).dtype
    for batch in evaluation_batches(datamodule, indices, device, dtype):
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


def load_backbone(checkpoint: Path) -> nn.Module:
    """The backbone of a pretraining or probe checkpoint (both keep `backbone.*` and its config),
    in eval mode."""
    config, state = read_checkpoint(
        checkpoint, "checkpoint", "pass --checkpoint <run_dir>/checkpoints/last.ckpt or best.ckpt"
    )
    backbone = build_backbone(config)
    backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    )
    return backbone.eval()


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
    # imported here: the callbacks import this module and train.py may import them (a cycle)
    from ssl_lightning.train import build_datamodule

    checkpoint = Path(checkpoint).expanduser()
    run_dir = checkpoint.resolve().parent.parent
    config_file = Path(config) if config else run_dir / ".hydra" / "config.yaml"
    backbone = load_backbone(checkpoint)
    cfg = load_run_config(config_file, overrides)
    datamodule = build_datamodule(cfg, run_dir)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".npz":
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
    else:
        with h5py.File(tmp, "w") as handle:
            for name, values in arrays.items():
                handle.create_dataset(name, data=values)
    tmp.replace(out)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssl-embed",
        description="Write the backbone embeddings of a dataset split computed from a checkpoint.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="last.ckpt or best.ckpt")
    parser.add_argument("--split", default="test", choices=CHOICES)
    parser.add_argument("--out", required=True, type=Path, help="FILE.h5 or FILE.npz")
    parser.add_argument(
        "--config", type=Path, help="the run's config.yaml (default: <run_dir>/.hydra/config.yaml)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. paths.data_dir=/data")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `ssl-embed`: bad input ends in one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        check_format(args.out)
        arrays = embed_checkpoint(
            args.checkpoint, args.split, args.config, args.overrides, args.device
        )
        out = write_embeddings(arrays, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    n, dim = arrays["embeddings"].shape
    print(f"{n} {args.split} embeddings of dimension {dim} -> {out}")


if __name__ == "__main__":
    main()
