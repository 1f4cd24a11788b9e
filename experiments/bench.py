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

`--device gpu` (the default where CUDA shows a GPU: `--device auto`) measures the GPU instead:
- jets and natural, each SSL method, on one GPU (`hardware=gpu`), for every cell of the grid
  precision {bf16-mixed, 32-true} x `hardware.compile` {off, on}: ours against the bare ceiling
  as above (the bare one compiled and autocast as ours is), the GPU synchronised at both ends of
  each timed window and nowhere else; warm-up steps, the compilation among them, are not timed.
- speed-ups from the cells of the same run: bf16 over fp32, compiled over eager, for ours and
  for the bare ceiling.
- scaling: one GPU against all of them under DDP (`hardware=ddp`), when more than one is seen.
All of it, with the machine (GPUs, torch, CUDA), goes to docs/results/bench_gpu_<date>.json,
rewritten after each measurement so that a run cut short keeps what it measured. Without CUDA,
`--device gpu` says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from omegaconf import OmegaConf

from ssl_lightning.atomic_files import replaced_atomically, write_text_atomically

REPO = Path(__file__).resolve().parents[1]
JOBS_SCRIPT = Path(__file__).with_name("bench_jobs.py")
MACHINE_SCRIPT = Path(__file__).with_name("bench_machine.py")
NUM_IMAGES = 5120  # per data set, as in the peer scripts
DATA_SEED = 0
TRAINING = ("jets", "natural", "jets125")
OTHERS = ("loader", "scaling")
GPU_DEFAULT = ("jets", "natural", "scaling")  # loader and peer measure the host alone
NO_CUDA = "bench: no CUDA device on this machine; GPU bench skipped (CPU bench: make bench)"


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
# A GPU step takes milliseconds: 15-step windows (a jets epoch holds 16 steps at batch 256, and a
# window never spans an epoch's end) make the synchronisation at each end a small share; the
# warm-up covers compilation and the first cuDNN calls.
GPU_TIMING = Timing(warmup=10, steps=15, windows=8)
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


@dataclass(frozen=True)
class Cell:
    """One setting of the GPU grid, measured on one GPU."""

    precision: str
    compile: bool

    def overrides(self) -> list[str]:
        compiled = str(self.compile).lower()
        return [
            "hardware=gpu",
            f"hardware.precision={self.precision}",
            f"hardware.compile={compiled}",
        ]


# eager cells first: a run cut short (compilation takes longest) keeps every bf16/fp32 pair
GRID = tuple(Cell(p, c) for c in (False, True) for p in ("bf16-mixed", "32-true"))
SPEEDUPS = {  # name: (the switch, its setting, the setting it is compared with)
    "bf16_over_fp32": ("precision", "bf16-mixed", "32-true"),
    "compiled_over_eager": ("compile", True, False),
}


@dataclass(frozen=True)
class Scaling:
    """`ssl-train` on one process (`single` hardware) against several (`multi`). Strong: they
    share the global batch of one. Weak: each keeps the batch of one and the data grows with
    them, so all settings run the same steps per epoch (epoch ends are timed too)."""

    workload: str
    single: str
    multi: str
    weak: bool


SCALING = {
    # 2 processes share the machine's cores: this measures what DDP costs, not a speed-up
    "cpu": Scaling("jets", "cpu", "ddp_cpu", weak=False),
    # every GPU adds compute: how close N come to N times one; random images grow for free
    "gpu": Scaling("natural", "gpu", "ddp", weak=True),
}
CPU_PROCESSES = 2


def job_overrides(workload: str, method: str, data_file: Path, extra: Iterable[str]) -> list[str]:
    """The `ssl-train` overrides of a workload and method, then `extra` (which win)."""
    return [
        f"method={method}",
        *WORKLOADS[workload].overrides,
        f"dataset.source.path={data_file}",
        *PROJECTORS.get((workload, method), ()),
        *extra,
    ]


def speedups(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each switch of the GPU grid against its base with all else equal, for every such pair of
    cells in `cells`: the ratio of images/s of ours and of the bare ceiling."""
    setting = ("workload", "method", "precision", "compile")
    found = {tuple(cell[key] for key in setting): cell for cell in cells}
    rows = []
    for name, (switch, on, base) in SPEEDUPS.items():
        for cell in cells:
            other = found.get(tuple(base if key == switch else cell[key] for key in setting))
            if cell[switch] != on or other is None:
                continue
            held = next(key for key in ("precision", "compile") if key != switch)
            ratio = {
                side: round(cell[key] / other[key], 3)
                for side, key in (("ours", "images_per_s"), ("bare", "bare_images_per_s"))
            }
            rows.append(
                {"speedup": name, "workload": cell["workload"], "method": cell["method"]}
                | {held: cell[held], **ratio}
            )
    return rows


# --- data -----------------------------------------------------------------------------------
def prepare_data(data_dir: Path, name: str, num_images: int = NUM_IMAGES) -> Path:
    """The cached data file, made on first use (jets take minutes: Pythia runs per jet)."""
    path = data_dir / f"{name}_n{num_images}_seed{DATA_SEED}.h5"
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "natural":
        write_natural(path, num_images)
    else:
        size = {"jets32": 32, "jets125": 125}[name]
        command = [sys.executable, "-m", "ssl_lightning.generator", "--num-jets", str(num_images)]
        command += ["--seed", str(DATA_SEED), "--out", str(path), "--image-size", str(size)]
        subprocess.run([*command, "--workers", str(os.cpu_count() or 1)], check=True)
    return path


def write_natural(path: Path, num_images: int) -> None:
    """The peer's in-memory images (same seed, same draws), as float32 in [0, 1], (N, C, H, W)."""
    rng = np.random.default_rng(DATA_SEED)
    images = rng.integers(0, 256, size=(num_images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=num_images)
    with replaced_atomically(path) as tmp, h5py.File(tmp, "w") as f:
        f["images"] = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
        f["y"] = labels


# --- running --------------------------------------------------------------------------------
def run_checked(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command; on failure show the end of its output and stop the bench."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"bench: command failed: {' '.join(command)}")
    return done


def printed_json(command: list[str], **kwargs: object) -> dict:
    """The JSON object that a command prints on its last line."""
    return json.loads(run_checked(command, **kwargs).stdout.strip().splitlines()[-1])


def spawn(
    job: str,
    workload: str,
    method: str,
    data_file: Path,
    args: argparse.Namespace,
    overrides: Iterable[str] = (),
    options: Iterable[str] = (),
) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON; `overrides` (the
    measurement's own `ssl-train` overrides) win over the user's `--override`s."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(JOBS_SCRIPT), job, workload, method, str(data_file)]
        command += ["--out", out.name, *["--quick"] * args.quick, *options]
        command += [f"--override={o}" for o in [*args.override, *overrides]]
        run_checked(command)
        return json.loads(Path(out.name).read_text())


def spawn_scaling(device: str, processes: int, args: argparse.Namespace) -> dict:
    """`ssl-train` on one process against `processes` (SCALING[device]), in a fresh interpreter."""
    setup = SCALING[device]
    data_file = prepare_data(args.data_dir, WORKLOADS[setup.workload].data)
    options = ["--device", device, "--processes", str(processes)]
    return spawn("scaling", setup.workload, "simclr", data_file, args, options=options)


def run_peer(args: argparse.Namespace, workload: str, method: str) -> list[dict]:
    """The peer's scripts for the same workload and method (lightly, in its own venv)."""
    results = []
    for script in PEER_SCRIPTS[workload]:
        command = [str(args.peer), script, "--method", PEER_METHOD[method]]
        command += ["--warmup", "1", "--steps", "2"] if args.quick else []
        ours = {"workload": workload, "method": method, "peer_script": script}
        # our names for workload and method
        results.append({**printed_json(command, cwd=args.peer_scripts), **ours})
    return results


def describe_machine() -> dict[str, Any]:
    """bench_machine.py's account of this machine (GPUs, versions), from a process of its own."""
    return printed_json([sys.executable, str(MACHINE_SCRIPT)])


def cpu_bench(args: argparse.Namespace) -> None:
    """The CPU workloads; every result is printed and written to `args.out` as it comes."""
    out = args.out or REPO / "bench_results.json"
    results = []

    def report(result: dict) -> None:
        print(json.dumps(result), flush=True)
        results.append(result)
        write_text_atomically(out, json.dumps(results, indent=1) + "\n")

    for name in args.workloads or (*TRAINING, *OTHERS):
        if name == "loader":
            for workload in LOADER_TARGETS:
                data_file = prepare_data(args.data_dir, WORKLOADS[workload].data)
                report(spawn("loader", workload, "simclr", data_file, args))
        elif name == "scaling":
            report(spawn_scaling("cpu", CPU_PROCESSES, args))
        else:
            data_file = prepare_data(args.data_dir, WORKLOADS[name].data)
            for method in WORKLOADS[name].methods:
                if method in args.methods:
                    report(spawn("train", name, method, data_file, args))
                    if args.peer and name in PEER_SCRIPTS and method in PEER_METHOD:
                        for result in run_peer(args, name, method):
                            report(result)


def gpu_bench(args: argparse.Namespace, machine: dict[str, Any]) -> None:
    """The grid on one GPU, its speed-ups, and 1 GPU against all; the record is printed cell by
    cell and rewritten to `args.out` after each."""
    workloads = args.workloads or GPU_DEFAULT
    host_only = [name for name in workloads if name not in (*TRAINING, "scaling")]
    host_only += ["--peer"] * bool(args.peer)
    if host_only:
        raise SystemExit(f"bench: {', '.join(host_only)}: CPU bench only (add --device cpu)")
    today = datetime.date.today().isoformat()
    out = args.out or REPO / "docs" / "results" / f"bench_gpu_{today}.json"
    record: dict[str, Any] = {
        "date": today,
        "machine": machine,
        "settings": {
            "workloads": list(workloads),
            "methods": args.methods,
            "quick": args.quick,
            "override": args.override,
        },
        "cells": [],
        "speedups": [],
    }

    def report(key: str, result: dict) -> None:
        print(json.dumps(result), flush=True)
        if key == "cells":
            record["cells"].append(result)
            record["speedups"] = speedups(record["cells"])
        else:
            record[key] = result
        write_text_atomically(out, json.dumps(record, indent=1) + "\n")

    training = [name for name in workloads if name in TRAINING]
    for cell in GRID:
        for name in training:
            data_file = prepare_data(args.data_dir, WORKLOADS[name].data)
            for method in WORKLOADS[name].methods:
                if method in args.methods:
                    report("cells", spawn("train", name, method, data_file, args, cell.overrides()))
    if "scaling" in workloads:
        gpus = machine["gpu_count"]
        skipped = {"skipped": f"{gpus} GPU visible: scaling needs two or more"}
        report("scaling", spawn_scaling("gpu", gpus, args) if gpus > 1 else skipped)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    machine = describe_machine() if args.device != "cpu" else {"gpu_count": 0}
    if machine["gpu_count"]:
        gpu_bench(args, machine)
    elif args.device == "gpu":
        print(NO_CUDA)
    else:
        cpu_bench(args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="auto: the GPU bench where CUDA shows a GPU, else the CPU bench",
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        choices=TRAINING + OTHERS,
        help=f"default: all on the CPU; {' '.join(GPU_DEFAULT)} on a GPU",
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
    p.add_argument(
        "--out",
        type=Path,
        help="default: bench_results.json; docs/results/bench_gpu_<date>.json on a GPU",
    )
    p.add_argument("--peer", type=Path, help="python of a venv with lightly and its peer scripts")
    p.add_argument("--peer-scripts", type=Path, help="folder holding the peer scripts")
    args = p.parse_args(argv)
    if args.peer and not args.peer_scripts:
        p.error("--peer needs --peer-scripts")
    return args


if __name__ == "__main__":
    main()
