"""One `make bench` measurement in this process (bench.py starts one process per measurement).

    python experiments/bench_jobs.py {train,loader,scaling} WORKLOAD METHOD DATA_FILE --out X.json

Kept apart from bench.py so that the orchestrating process never imports the training stack:
its own peak RSS and start-up stay out of the measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import numpy as np
import torch
from bench import LOADER_TARGETS, QUICK, QUICK_OVERRIDES, WORKLOADS, Timing, job_overrides
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_lightning import train
from ssl_lightning.callbacks.loss_trace import LossTrace
from ssl_lightning.data.batching import BatchIndexSampler, BatchReader
from ssl_lightning.data.random_keys import sample_keys
from ssl_lightning.data.splits import make_split
from ssl_lightning.host_memory import keep_freed_memory
from ssl_lightning.optim import build_optimizer, split_decay_groups

LOADER_BATCH = 256
SCALING_GLOBAL_BATCH = 256


def peak_rss_mb(who: int) -> int:
    """Peak resident set size in MiB (Linux reports KiB)."""
    return round(resource.getrusage(who).ru_maxrss / 1024)


# --- the full step --------------------------------------------------------------------------
class StepTimer(LossTrace):
    """LossTrace that also times steps end to end, runs `between` after each timed window, and
    stops the fit after the last window.

    The interval before a batch end holds its fetch, transfer, views, step and callbacks; an
    interval that starts an epoch also holds the previous epoch's end, so it is not counted, and
    neither is the time `between` takes.
    """

    def __init__(self, timing: Timing, between: Callable[[], None]) -> None:
        super().__init__()
        self.timing, self.between = timing, between
        self.durations: list[float] = []
        self.steps_seen = 0
        self.last_end = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        now = time.perf_counter()
        if self.steps_seen >= self.timing.warmup and batch_idx > 0:
            self.durations.append(now - self.last_end)
            if len(self.durations) % self.timing.steps == 0:
                self.between()
                now = time.perf_counter()
            if len(self.durations) == self.timing.steps * self.timing.windows:
                trainer.should_stop = True
        self.last_end = now
        self.steps_seen += 1

    def window_rates(self, batch_size: int) -> list[float]:
        steps = self.timing.steps
        windows = [self.durations[i : i + steps] for i in range(0, len(self.durations), steps)]
        return [batch_size * len(w) / sum(w) for w in windows]


# --- the bare ceiling -----------------------------------------------------------------------
class BareStep:
    """The method's backbone, projector, loss and optimizer on fixed views, in plain PyTorch."""

    def __init__(self, cfg: DictConfig, image_shape: tuple[int, int, int]) -> None:
        method = OmegaConf.to_container(cfg.method, resolve=True)
        self.model = train.build(method, _recursive_=False, _convert_="all")
        self.device = torch.device("cuda" if cfg.hardware.accelerator == "gpu" else "cpu")
        memory_format = (
            torch.channels_last if cfg.hardware.channels_last else torch.contiguous_format
        )
        self.net = nn.Sequential(self.model.backbone, self.model.projector).train()
        self.net.to(self.device, memory_format=memory_format)
        decay, no_decay = split_decay_groups(self.net)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars": False}]
        opt = cfg.method.optimizer
        self.optimizer = build_optimizer(opt.name, groups, opt.lr, opt)
        self.n = cfg.method.batch_size
        views = torch.randn(2 * self.n, *image_shape, device=self.device)
        self.views = views.contiguous(memory_format=memory_format)
        half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(cfg.hardware.precision)
        self.autocast = torch.autocast(self.device.type, dtype=half, enabled=half is not None)

    def step(self) -> None:
        with self.autocast:
            z = self.net(self.views)
            loss = self.model.ssl_loss(z[: self.n], z[self.n :])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def rate(self, steps: int) -> float:
        """Images/s over `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":  # wall time must cover the queued GPU work
            torch.cuda.synchronize(self.device)
        return self.n * steps / (time.perf_counter() - start)


def augment_rate(cfg: DictConfig, image: Tensor, reps: int) -> float:
    """Images/s of the view augmentation alone (both views, one call), on one real batch."""
    augment = train.build(cfg.augment)
    index = torch.arange(len(image))
    start = time.perf_counter()
    for epoch in range(reps):
        augment(image, torch.cat([sample_keys(cfg.seed, epoch, index, v) for v in range(2)]))
    return reps * len(image) / (time.perf_counter() - start)


# --- jobs -----------------------------------------------------------------------------------
def training_job(args: argparse.Namespace) -> dict[str, Any]:
    """Full step, bare ceiling and augmentation rate of one workload and method."""
    timing = QUICK if args.quick else WORKLOADS[args.workload].timing
    loadavg = os.getloadavg()[0]
    # validation is off: the timer leaves epoch ends out anyway, and it would cost minutes
    extra = ["trainer.max_epochs=1000", "trainer.limit_val_batches=0"]
    extra += [*QUICK_OVERRIDES] * args.quick + args.override
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cfg = train.compose_run(
            job_overrides(args.workload, args.method, args.data_file, extra), Path(tmp)
        )
        keep_freed_memory(cfg.hardware.malloc_keep_mb)  # as run() does: bare and views see it too
        source = train.build(cfg.dataset.source)
        image = torch.from_numpy(source.read(np.arange(cfg.method.batch_size)))
        augment = augment_rate(cfg, image, reps=2 if args.quick else 10)
        bare = BareStep(cfg, source.image_shape)
        bare.rate(timing.warmup)
        bare_rates: list[float] = []
        timer = StepTimer(timing, lambda: bare_rates.append(bare.rate(timing.steps)))
        # run() takes no extra callbacks: the timer stands in for its LossTrace
        with mock.patch.object(train, "LossTrace", lambda: timer):
            results = train.run(cfg)
    full = timer.window_rates(cfg.method.batch_size)
    efficiency = statistics.median(f / b for f, b in zip(full, bare_rates, strict=True))
    choices = HydraConfig.get().runtime.choices
    return {
        "workload": args.workload,
        "method": args.method,
        "backbone": choices["backbone"],
        "image_shape": list(source.image_shape),
        "batch_size": cfg.method.batch_size,
        "images_per_s": round(statistics.median(full), 1),
        "bare_images_per_s": round(statistics.median(bare_rates), 1),
        "efficiency": round(efficiency, 3),
        "augment_images_per_s": round(augment, 1),
        "windows_images_per_s": [round(r, 1) for r in full],
        "windows_bare_images_per_s": [round(r, 1) for r in bare_rates],
        "warmup_steps": timing.warmup,
        "timed_steps": timing.steps * timing.windows,
        "train_loss_first_step": results["train_loss_first_step"],
        "peak_rss_mb": peak_rss_mb(resource.RUSAGE_SELF),
        "threads": torch.get_num_threads(),
        "channels_last": cfg.hardware.channels_last,
        "precision": cfg.hardware.precision,
        "logger": choices["logger"],
        "torch": torch.__version__,
        "loadavg_1m_before_after": [round(loadavg, 2), round(os.getloadavg()[0], 2)],
    }


def loader_job(args: argparse.Namespace) -> dict[str, Any]:
    """Read + densify rate of the training loader alone, on one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        # from the file, whatever the workload holds in memory: this measures the reading
        extra = ["dataset.source.in_memory=false", *args.override]
        overrides = job_overrides(args.workload, args.method, args.data_file, extra)
        cfg = train.compose_run(overrides, Path(tmp))
    source = train.build(cfg.dataset.source)
    sampler = BatchIndexSampler(np.arange(len(source)), LOADER_BATCH, True, cfg.seed, 0, 1)
    reader = BatchReader(source)
    loader = DataLoader(reader, sampler=sampler, batch_size=None, num_workers=0)
    rates = []
    for epoch in range(2 if args.quick else 5):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        images = sum(len(batch["image"]) for batch in loader)
        rates.append(images / (time.perf_counter() - start))
    with h5py.File(args.data_file) as f:
        node = f[cfg.dataset.source.image_key]
        sparse = isinstance(node, h5py.Group)
        storage = "sparse" if sparse else f"dense, {node.compression or 'uncompressed'}"
    return {
        "workload": f"loader_{args.workload}",
        "image_shape": list(source.image_shape),
        "storage": storage,
        "batch_size": LOADER_BATCH,
        "cpus": 1,
        "images_per_s": round(statistics.median(rates[1:])),
        "first_pass_images_per_s": round(rates[0]),  # a cold HDF5 chunk cache: decompression
        "target_images_per_s": LOADER_TARGETS[args.workload],
        "peak_rss_mb": peak_rss_mb(resource.RUSAGE_SELF),
    }


def scaling_job(args: argparse.Namespace) -> dict[str, Any]:
    """`ssl-train` with 1 and 2 CPU processes at one global batch, timed from the command line.

    Each setting runs for two epoch counts; the difference of the wall times over the difference
    of the steps cancels the start-up (imports, DDP rendezvous, data statistics, W&B).
    """
    epochs = (1, 2) if args.quick else (1, 5)
    walls: dict[int, list[float]] = {}
    for processes, hardware in ((1, "cpu"), (2, "ddp_cpu")):
        walls[processes] = []
        for max_epochs in epochs:
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                extra = [
                    f"hardware={hardware}",
                    f"method.batch_size={SCALING_GLOBAL_BATCH // processes}",
                    f"trainer.max_epochs={max_epochs}",
                    "trainer.limit_val_batches=0",
                    f"hydra.run.dir={tmp}",
                    *args.override,
                ]
                command = [sys.executable, "-m", "ssl_lightning.train"]
                command += job_overrides(args.workload, args.method, args.data_file, extra)
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                walls[processes].append(time.perf_counter() - start)
                if done.returncode:
                    sys.exit(done.stderr[-6000:])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        overrides = job_overrides(args.workload, args.method, args.data_file, args.override)
        ds = train.compose_run(overrides, Path(tmp)).dataset
    size = len(train.build(ds.source))
    train_split = make_split(size, ds.val_fraction, ds.test_fraction, ds.split_seed)["train"]
    steps = (epochs[1] - epochs[0]) * (len(train_split) // SCALING_GLOBAL_BATCH)
    rates = {p: SCALING_GLOBAL_BATCH * steps / (w[1] - w[0]) for p, w in walls.items()}
    return {
        "workload": "ddp_scaling",
        "data": args.workload,
        "method": args.method,
        "global_batch": SCALING_GLOBAL_BATCH,
        "images_per_s_1_process": round(rates[1], 1),
        "images_per_s_2_processes": round(rates[2], 1),
        "speedup": round(rates[2] / rates[1], 3),
        "timed_steps": steps,
        "peak_rss_mb_largest_process": peak_rss_mb(resource.RUSAGE_CHILDREN),
    }


JOBS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train": training_job,
    "loader": loader_job,
    "scaling": scaling_job,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("job", choices=list(JOBS))
    p.add_argument("workload", choices=list(WORKLOADS))
    p.add_argument("method")
    p.add_argument("data_file", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--override", action="append", default=[])
    args = p.parse_args()
    args.out.write_text(json.dumps(JOBS[args.job](args)))


if __name__ == "__main__":
    main()
