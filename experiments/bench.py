"""`make bench`: images/s of the real `ssl-train` step against a bare-PyTorch ceiling.

Workloads (`--workloads`, default all):
- jets: ResNet-15, 3x32x32 generated jets (HDF5, dense, held in memory as `dataset=jets` does),
  batch 256, jet views; SimCLR and BT.
- natural: ResNet-18 (CIFAR stem), 5,120 seeded uint8 32x32 images, batch 128, SimCLR views and
  lightly's projector sizes: the workload of the lightly peer scripts, to run side by side.
- jets125: ResNet-15 on 3x125x125 jets stored sparse (the loader densifies them); SimCLR.
- loader: read + densify of the jets and jets125 files alone, on one core.
- scaling: `ssl-train` on jets with 1 process and with 2 (hardware=ddp_cpu) at one global batch.

Each measurement runs in a fresh process (bench_jobs.py), so its peak RSS is its own. There:
- full: `ssl_lightning.train.run` on the composed config, the path `ssl-train` takes (whole-batch
  reads, views made on the device, Lightning fit with the online probe, logging at its default
  rate), timed between consecutive training-batch ends. Warm-up steps and intervals that span
  an epoch boundary (validation, checkpoints) are left out.
- bare: the same backbone, projector, loss and optimizer on pre-made random views, forward +
  backward + step in plain PyTorch: no loader, no augmentation, no Lightning, no probe. A bare
  window runs after each full window, inside the same fit, so both see the same machine load.
- efficiency: the median over window pairs of full / bare; images/s are medians over windows.

images/s counts source images (each seen as two views), as the peer scripts do. Each result is
one JSON line on stdout; all of them go to bench_results.json. `--peer` runs lightly's scripts
(/work/shared/bench style: throughput_lightly.py, bare_throughput.py, throughput_jets_lightly.py)
right after ours on the same workload, so the two are measured minutes apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
JOBS_SCRIPT = Path(__file__).with_name("bench_jobs.py")
NUM_IMAGES = 5120  # per data set, as in the peer scripts
DATA_SEED = 0
TRAINING = ("jets", "natural", "jets125")
OTHERS = ("loader", "scaling")


def ssl_methods() -> tuple[str, ...]:
    """Every SSL method config (the ones built on conf/method/ssl_base.yaml), SimCLR first: a new
    method is benchmarked without a change here."""
    configs = sorted((REPO / "conf" / "method").glob("*.yaml"))
    built = [p.stem for p in configs if "ssl_base" in OmegaConf.load(p).get("defaults", [])]
    return tuple(sorted(built, key=lambda name: (name != "simclr", name)))


METHODS = ssl_methods()
LOADER_TARGETS = {"jets": 20_000, "jets125": 2_000}  # read + densify images/s on one core
# the peer's scripts per workload, and the names they give the methods
PEER_SCRIPTS = {
    "natural": ("throughput_lightly.py", "bare_throughput.py"),
    "jets": ("throughput_jets_lightly.py",),
}
PEER_METHOD = {"simclr": "simclr", "barlow_twins": "barlow"}  # the methods the peer has


@dataclass(frozen=True)
class Timing:
    """Steps per measurement: `windows` windows of `steps` timed steps, after `warmup` steps."""

    warmup: int
    steps: int
    windows: int


@dataclass(frozen=True)
class Workload:
    """One benchmark: a data set, the `ssl-train` overrides that select it, and its timing."""

    data: str
    methods: tuple[str, ...]
    overrides: tuple[str, ...]
    timing: Timing


QUICK = Timing(warmup=1, steps=1, windows=2)
QUICK_OVERRIDES = ("method.batch_size=16",)  # --quick checks the machinery, it measures nothing
HDF5_JETS = ("dataset=hdf5", "augment=jets", "method.batch_size=256")
# as the built-in `dataset=jets` reads them: images held in memory, 1 MeV zero-suppression
JETS32 = (*HDF5_JETS, "dataset.source.in_memory=true", "dataset.preprocess.zero_suppress=1e-3")
NATURAL = (
    "backbone=resnet18_cifar",
    "dataset=hdf5",
    "dataset.source.image_key=images",
    "dataset.source.layout=channels_first",
    "dataset.source.target_keys=[]",
    "dataset.source.in_memory=true",
    "dataset.num_classes=10",
    "augment=natural",
    "method.batch_size=128",
)
PROJECTORS = {  # lightly's SimCLRProjectionHead(512, 512, 128), BarlowTwinsProjectionHead(...2048)
    ("natural", "simclr"): ("method.projector.hidden_dim=512", "method.projector.out_dim=128"),
    ("natural", "barlow_twins"): (
        "method.projector.hidden_dim=2048",
        "method.projector.out_dim=2048",
    ),
}
WORKLOADS = {  # short, many window pairs where steps are short: load on these machines drifts
    # within seconds (6 pairs of 10 jets steps gave 0.882 once, 0.905-0.930 thrice)
    "jets": Workload("jets32", METHODS, JETS32, Timing(warmup=5, steps=5, windows=16)),
    "natural": Workload("natural", METHODS, NATURAL, Timing(warmup=2, steps=3, windows=4)),
    "jets125": Workload("jets125", ("simclr",), HDF5_JETS, Timing(warmup=2, steps=2, windows=4)),
}


def job_overrides(workload: str, method: str, data_file: Path, extra: Iterable[str]) -> list[str]:
    """The `ssl-train` overrides of a workload and method, then `extra` (which win)."""
    return [
        f"method={method}",
        *WORKLOADS[workload].overrides,
        f"dataset.source.path={data_file}",
        *PROJECTORS.get((workload, method), ()),
        *extra,
    ]


# --- data -----------------------------------------------------------------------------------
def prepare_data(data_dir: Path, name: str) -> Path:
    """The cached data file, made on first use (jets take minutes: Pythia runs per jet)."""
    path = data_dir / f"{name}_n{NUM_IMAGES}_seed{DATA_SEED}.h5"
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "natural":
        write_natural(path)
    else:
        size = {"jets32": 32, "jets125": 125}[name]
        command = [sys.executable, "-m", "ssl_lightning.generator", "--num-jets", str(NUM_IMAGES)]
        command += ["--seed", str(DATA_SEED), "--out", str(path), "--image-size", str(size)]
        subprocess.run([*command, "--workers", str(os.cpu_count() or 1)], check=True)
    return path


def write_natural(path: Path) -> None:
    """The peer's in-memory images (same seed, same draws), as float32 in [0, 1], (N, C, H, W)."""
    rng = np.random.default_rng(DATA_SEED)
    images = rng.integers(0, 256, size=(NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=NUM_IMAGES)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f["images"] = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
        f["y"] = labels
    tmp.replace(path)


# --- running --------------------------------------------------------------------------------
def run_checked(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command; on failure show the end of its output and stop the bench."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"bench: command failed: {' '.join(command)}")
    return done


def spawn(job: str, workload: str, method: str, data_file: Path, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(JOBS_SCRIPT), job, workload, method, str(data_file)]
        command += ["--out", out.name, *["--quick"] * args.quick]
        command += [f"--override={o}" for o in args.override]
        run_checked(command)
        return json.loads(Path(out.name).read_text())


def run_peer(args: argparse.Namespace, workload: str, method: str) -> list[dict]:
    """The peer's scripts for the same workload and method (lightly, in its own venv)."""
    results = []
    for script in PEER_SCRIPTS[workload]:
        command = [str(args.peer), script, "--method", PEER_METHOD[method]]
        command += ["--warmup", "1", "--steps", "2"] if args.quick else []
        line = run_checked(command, cwd=args.peer_scripts).stdout.strip().splitlines()[-1]
        ours = {"workload": workload, "method": method, "peer_script": script}
        results.append({**json.loads(line), **ours})  # our names for workload and method
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    results = []

    def report(result: dict) -> None:
        print(json.dumps(result), flush=True)
        results.append(result)

    for name in args.workloads:
        if name == "loader":
            for workload in LOADER_TARGETS:
                data_file = prepare_data(args.data_dir, WORKLOADS[workload].data)
                report(spawn("loader", workload, "simclr", data_file, args))
        elif name == "scaling":
            data_file = prepare_data(args.data_dir, WORKLOADS["jets"].data)
            report(spawn("scaling", "jets", "simclr", data_file, args))
        else:
            data_file = prepare_data(args.data_dir, WORKLOADS[name].data)
            for method in WORKLOADS[name].methods:
                if method in args.methods:
                    report(spawn("train", name, method, data_file, args))
                    if args.peer and name in PEER_SCRIPTS and method in PEER_METHOD:
                        for result in run_peer(args, name, method):
                            report(result)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--workloads", nargs="+", default=[*TRAINING, *OTHERS], choices=TRAINING + OTHERS
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 steps per measurement at batch 16: a smoke test, not a measurement",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra ssl-train override for every run (repeatable): hardware.channels_last=true",
    )
    p.add_argument("--data-dir", type=Path, default=REPO / "data" / "bench", help="data cache")
    p.add_argument("--out", type=Path, default=REPO / "bench_results.json")
    p.add_argument("--peer", type=Path, help="python of a venv with lightly and its peer scripts")
    p.add_argument("--peer-scripts", type=Path, help="folder holding the peer scripts")
    args = p.parse_args(argv)
    if args.peer and not args.peer_scripts:
        p.error("--peer needs --peer-scripts")
    return args


if __name__ == "__main__":
    main()
