"""Peak memory of the two data steps that once grew with the data: converting a multi-file E2E
Parquet set to the sparse HDF5 cache, and the scaling statistics.

    python experiments/data_memory.py convert --jets 1500 6000 [--row-groups 1]
    python experiments/data_memory.py stats --jets 256 1024

Each measurement runs in a fresh process and reports its peak resident memory (VmHWM) and
its resident memory just before the measured step (imports, inputs), so the step's own cost is
the difference. `convert` writes the Parquet files in the public layout (3 files, run0/1/2; one
row per jet: X_jets as list<list<list<double>>> 3 x 125 x 125, y, pt, m0; snappy; by default
one row group per file, as pandas/pyarrow write them), fits peak = a + b x jets over the sizes
and extrapolates to the public set's 139,306 jets. `stats` compares the old statistics (the
whole sample read at once, then mean/std in float64) with the streaming ones, on generated
8-channel 125 x 125 jets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PUBLIC_JETS = 139_306
SIZE = 125
MiB = 1 << 20


def resident_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM). Not ru_maxrss: Linux
    carries it over exec, so a child would report its parent's size at the fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib() -> float:
    return resident_mib("VmHWM")


# --- the Parquet set ------------------------------------------------------------------------------
def write_parquet_set(folder: Path, jets: int, files: int, row_groups: int) -> list[Path]:
    """`files` Parquet files of E2E quark/gluon jets in the public layout, `jets` in all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    paths = []
    for number, part in enumerate(np.array_split(np.arange(jets), files)):
        n = len(part)
        images = _jet_images(rng, n)  # float64 [n, 3, 125, 125], as the public files hold
        level = pa.array(images.reshape(-1))
        for count in (SIZE, SIZE, 3):  # pixels -> image rows -> channels -> jets
            offsets = np.arange(0, len(level) + 1, count, dtype=np.int64)
            offsets_type = pa.int32() if offsets[-1] < 2**31 else pa.int64()
            maker = pa.ListArray if offsets_type == pa.int32() else pa.LargeListArray
            level = maker.from_arrays(pa.array(offsets, offsets_type), level)
        table = pa.table(
            {
                "X_jets": level,
                "y": rng.integers(0, 2, n).astype(np.float64),
                "pt": rng.uniform(70, 400, n),
                "m0": rng.uniform(0, 40, n),
            }
        )
        path = folder / f"QCDToGGQQ_IMGjet_RH1all_jet0_run{number}_n{n}.test.snappy.parquet"
        pq.write_table(table, path, compression="snappy", row_group_size=-(-n // row_groups))
        paths.append(path)
        del images, level, table
    return paths


def _jet_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse tracks/ECAL/HCAL jet images: ~30 / ~200 / ~100 log-normal hits around the axis."""
    images = np.zeros((n, 3, SIZE * SIZE))
    spec = ((30, 2.0, 1.0), (200, 0.3, 1.5), (100, 1.0, 1.2))  # hits, median, log sigma
    for channel, (hits, median, sigma) in enumerate(spec):
        jets = np.repeat(np.arange(n), rng.poisson(hits, n))
        rows, cols = (
            np.clip(np.rint(SIZE // 2 + 10 * rng.standard_normal(len(jets))), 0, SIZE - 1)
            for _ in range(2)
        )
        values = median * np.exp(sigma * rng.standard_normal(len(jets)))
        np.add.at(images[:, channel], (jets, (rows * SIZE + cols).astype(np.int64)), values)
    return images.reshape(n, 3, SIZE, SIZE)


# --- the measured steps, each in a child process --------------------------------------------------
def child_convert(folder: str, cache: str, buffered: str) -> dict:
    from ssl_lightning.data.sources import e2e_parquet
    from ssl_lightning.data.sources.e2e_parquet import E2EParquetSource

    if buffered == "0":  # Arrow's default: whole column chunks
        e2e_parquet.READ_BUFFER_BYTES = 0
    source = E2EParquetSource(str(Path(folder)), cache, "X_jets", "y", ["pt", "m0"], False, None)
    before = resident_mib()
    started = time.perf_counter()
    source.prepare()
    seconds = time.perf_counter() - started
    jets = len(source)
    return {"jets": jets, "before_mib": before, "peak_mib": peak_mib(), "seconds": seconds}


def child_stats(jets: int, streaming: bool) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from sparse_scaling_2g import mimic_2g

    from ssl_lightning.data.datamodule import STATS_BATCH_BYTES
    from ssl_lightning.data.preprocess import Preprocess

    per_batch = STATS_BATCH_BYTES // (4 * 8 * SIZE * SIZE)
    seeds = range(-(-jets // per_batch))
    batches = (torch.from_numpy(mimic_2g(per_batch, seed)) for seed in seeds)
    pre = Preprocess(1e-3, "standard", None, None, 8)
    before = resident_mib()
    if streaming:  # what ViewsDataModule._train_sample and Preprocess.fit do now
        pre.fit(batches)
    else:  # before: the whole sample read at once, then the old Preprocess.fit
        sample = torch.empty(jets, 8, SIZE, SIZE)
        for start, batch in zip(range(0, jets, per_batch), batches, strict=False):
            sample[start : start + per_batch] = batch[: jets - start]
        images = pre.suppress(sample).double()
        pre.offset = images.mean(dim=(0, 2, 3)).float().view(1, -1, 1, 1)
        pre.divisor = images.std(dim=(0, 2, 3)).clamp_min(1e-8).float().view(1, -1, 1, 1)
    return {"jets": jets, "streaming": streaming, "before_mib": before, "peak_mib": peak_mib()}


def measure(*args: str) -> dict:
    """Run this script's child mode in a fresh process; its JSON answer."""
    out = subprocess.run(
        [sys.executable, __file__, "child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    convert = sub.add_parser("convert")
    convert.add_argument("--jets", type=int, nargs="+", default=[1500, 6000])
    convert.add_argument("--files", type=int, default=3)
    convert.add_argument("--row-groups", type=int, default=1, help="per file")
    convert.add_argument("--unbuffered", action="store_true", help="Arrow's default reads")
    stats = sub.add_parser("stats")
    stats.add_argument("--jets", type=int, nargs="+", default=[256, 1024])
    child = sub.add_parser("child")
    child.add_argument("args", nargs="+")
    args = parser.parse_args()
    if args.step == "child":
        kind, *rest = args.args
        answer = (
            child_convert(*rest) if kind == "convert" else child_stats(int(rest[0]), rest[1] == "1")
        )
        print(json.dumps(answer))
        return
    rows = []
    if args.step == "convert":
        for jets in args.jets:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "parquet"
                folder.mkdir()
                paths = write_parquet_set(folder, jets, args.files, args.row_groups)
                size = sum(p.stat().st_size for p in paths) / MiB
                buffered = "0" if args.unbuffered else "1"
                row = measure("convert", str(folder), str(Path(tmp) / "cache"), buffered)
                rows.append(
                    {
                        **row,
                        "parquet_mib": size,
                        "row_groups_per_file": args.row_groups,
                        "buffered": not args.unbuffered,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        jets = np.array([r["jets"] for r in rows], dtype=float)
        peaks = np.array([r["peak_mib"] for r in rows])
        slope, intercept = np.polyfit(jets, peaks, 1) if len(rows) > 1 else (0.0, peaks[0])
        print(
            json.dumps(
                {
                    "fit_peak_mib": f"{intercept:.0f} + {slope * 1000:.2f} per 1000 jets",
                    "extrapolated_peak_mib_for_139306_jets": intercept + slope * PUBLIC_JETS,
                }
            )
        )
    else:
        for jets in args.jets:
            for streaming in (False, True):
                rows.append(measure("stats", str(jets), "1" if streaming else "0"))
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
