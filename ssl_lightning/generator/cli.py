"""The `ssl-make-jets` command line: options to a `JetGenConfig`, one-line errors, a summary."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ssl_lightning.errors import UserError
from ssl_lightning.generator.config import JetGenConfig
from ssl_lightning.generator.run import generate_jets
from ssl_lightning.generator.storage import DENSE_MAX_SIZE, SPARSE_CHOICES


def build_parser() -> argparse.ArgumentParser:
    d = JetGenConfig(num_jets=2, seed=0)  # the defaults, shown by --help
    p = argparse.ArgumentParser(
        prog="ssl-make-jets",
        description="Generate quark/gluon jet images (Pythia 8, anti-kT R=0.4) into an HDF5 "
        "file in the E2E layout (X_jets, y, pt, m0, nconst, eta, phi).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--num-jets", type=int, required=True, help="total jets, even (half per class)")
    p.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--image-size", type=int, default=d.image_size, help="pixels per side")
    p.add_argument("--pixel-width", type=float, default=d.pixel_width, help="in eta and phi")
    p.add_argument("--workers", type=int, default=1, help="generator processes")
    p.add_argument("--pt-min", type=float, default=d.pt_min, help="jet pT window low edge, GeV")
    p.add_argument("--pt-max", type=float, default=d.pt_max, help="jet pT window high edge, GeV")
    p.add_argument("--eta-max", type=float, default=d.eta_max, help="jet |eta| limit")
    p.add_argument(
        "--pthat-min", type=float, default=None, help="Pythia pTHatMin, GeV (default: --pt-min)"
    )
    p.add_argument(
        "--pthat-max", type=float, default=None, help="Pythia pTHatMax, GeV (default: --pt-max)"
    )
    p.add_argument(
        "--sparse",
        choices=SPARSE_CHOICES,
        default="auto",
        help=f"sparse X_jets group instead of a dense array (auto: images > {DENSE_MAX_SIZE} px)",
    )
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does: the worker
    processes end and the temp file goes (by default SIGTERM kills at once and leaves both)."""


def main(argv: list[str] | None = None) -> None:
    """Console script `ssl-make-jets`: bad input ends in one line on stderr and exit status 2;
    Ctrl-C and SIGTERM too (status 130 / 143), leaving no worker process and no temp file."""
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        config = JetGenConfig(
            num_jets=args.num_jets,
            seed=args.seed,
            image_size=args.image_size,
            pixel_width=args.pixel_width,
            pt_min=args.pt_min,
            pt_max=args.pt_max,
            eta_max=args.eta_max,
            pthat_min=args.pthat_min,
            pthat_max=args.pthat_max,
        )
        start = time.perf_counter()
        out = generate_jets(
            config,
            args.out,
            workers=args.workers,
            progress=True,
            sparse=args.sparse,
            command=shlex.join(["ssl-make-jets", *argv]),
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(
            f"error: stopped by {'SIGTERM' if terminated else 'Ctrl-C'}; {args.out} was not "
            "written (worker processes ended, temp file removed)",
            file=sys.stderr,
        )
        raise SystemExit(143 if terminated else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start
    print(
        f"wrote {config.num_jets} jets to {out} ({out.stat().st_size / 1e6:.1f} MB) in "
        f"{seconds:.1f} s: {config.num_jets / seconds:.1f} jets/s"
    )
