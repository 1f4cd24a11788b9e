"""`ssl-embed`: backbone embeddings of a dataset split, from a checkpoint, for use elsewhere.

    ssl-embed --checkpoint outputs/simclr/<run>/checkpoints/last.ckpt --split test --out emb.h5
    ssl-embed --checkpoint ... --out emb_2g.h5 --dataset e2e_2g_labelled dataset.source.path=...

The command line of `ssl_lightning.embeddings`: bad input ends in one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ssl_lightning.embeddings import CHOICES, check_format, embed_checkpoint, write_embeddings
from ssl_lightning.errors import UserError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssl-embed",
        description="Write the backbone embeddings of a dataset split computed from a checkpoint.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="last.ckpt or best.ckpt")
    parser.add_argument("--split", default="test", choices=CHOICES)
    parser.add_argument("--out", required=True, type=Path, help="FILE.h5 or FILE.npz")
    add_data_arguments(parser)
    return parser.parse_intermixed_args(argv)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the run config and the data a checkpoint is applied to (shared
    with ssl-eval)."""
    parser.add_argument(
        "--config", type=Path, help="the run's config.yaml (default: <run_dir>/.hydra/config.yaml)"
    )
    parser.add_argument(
        "--dataset",
        help="another dataset config than the run's (e.g. e2e_2g_labelled): its own split is "
        "made and saved as <out stem>.split.npz",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="config overrides, e.g. dataset.source.path=/data/other.h5 paths.data_dir=/data",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `ssl-embed`: bad input ends in one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        check_format(args.out)
        arrays, data = embed_checkpoint(
            args.checkpoint,
            args.split,
            args.out,
            args.config,
            args.dataset,
            args.overrides,
            args.device,
        )
        out = write_embeddings(arrays, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    n, dim = arrays["embeddings"].shape
    print(f"{n} {args.split} embeddings of dimension {dim} -> {out}")
    if not data.own_split:
        print(f"split of {data.cfg.dataset.name} (not the checkpoint's) -> {data.split_file}")


if __name__ == "__main__":
    main()
