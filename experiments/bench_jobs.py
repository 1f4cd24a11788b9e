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
import lightning as L
import numpy as np
import torch
from bench import (
    CPU_PROCESSES,
    GPU_TIMING,
    LOADER_TARGETS,
    NUM_IMAGES,
    QUICK,
    QUICK_OVERRIDES,
    SCALING,
    WORKLOADS,
    Timing,
    job_overrides,
    prepare_data,
)
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_lightning import train
from ssl_lightning.callbacks import loss_trace
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


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU: wall time then covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], None]) -> float:
    """Seconds that `work` takes, with the device synchronised at both ends and nowhere else."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


# --- the full step --------------------------------------------------------------------------
class StepTimer(LossTrace):
    """LossTrace that also times windows of consecutive steps end to end, runs `between` after
    each window, and stops the fit after the last one.

    A window runs from a batch end to the batch end `timing.steps` steps later: their fetches,
    transfers, views, steps and callbacks. A window that an epoch's end (validation,
    checkpoints) would split is dropped, and the time `between` takes is not counted. The device
    is synchronised at both ends of a window only, so queued work is counted where it ran.
    """

    def __init__(self, timing: Timing, between: Callable[[], None], device: torch.device) -> None:
        super().__init__()
        self.timing, self.between, self.device = timing, between, device
        self.seconds: list[float] = []  # per window
        self.steps_seen = 0
        self.window_start: float | None = None
        self.window_steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.num_training_batches <= self.timing.steps:
            raise RuntimeError(
                f"an epoch of {trainer.num_training_batches} steps holds no window of "
                f"{self.timing.steps}: use more data or a smaller batch"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.steps_seen += 1
        if self.steps_seen < self.timing.warmup:
            return
        if batch_idx == 0:  # the window in progress spans an epoch's end
            self.window_start = None
        elif self.window_start is not None:
            self.window_steps += 1
            if self.window_steps == self.timing.steps:
                synchronize(self.device)
                self.seconds.append(time.perf_counter() - self.window_start)
                self.between()
                self.window_start = None
                if len(self.seconds) == self.timing.windows:
                    trainer.should_stop = True
                    return
        if self.window_start is None:
            synchronize(self.device)
            self.window_start, self.window_steps = time.perf_counter(), 0

    def window_rates(self, batch_size: int) -> list[float]:
        return [batch_size * self.timing.steps / seconds for seconds in self.seconds]


# --- the bare ceiling -----------------------------------------------------------------------
class BareStep:
    """The method's backbone, projector, loss and optimizer on fixed views, in plain PyTorch;
    with the memory layout, compilation and autocast that `ssl-train` gives the same config."""

    def __init__(self, cfg: DictConfig, image_shape: tuple[int, int, int]) -> None:
        method = OmegaConf.to_container(cfg.method, resolve=True)
        self.model = train.build(method, _recursive_=False, _convert_="all")
        self.device = torch.device("cuda" if cfg.hardware.accelerator == "gpu" else "cpu")
        memory_format = (
            torch.channels_last if cfg.hardware.channels_last else torch.contiguous_format
        )
        self.net = nn.Sequential(self.model.backbone, self.model.projector).train()
        self.net.to(self.device, memory_format=memory_format)
        if cfg.hardware.compile:  # as run() does: the backbone alone, in place
            self.model.backbone.compile()
        decay, no_decay = split_decay_groups(self.net)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars": False}]
        opt = cfg.method.optimizer
        self.optimizer = build_optimizer(opt.name, groups, opt.lr, opt)
        self.n = cfg.method.batch_size
        views = torch.randn(2 * self.n, *image_shape, device=self.device)
        self.views = views.contiguous(memory_format=memory_format)
        # the trainer's precision: bf16 becomes fp16 on a GPU without bf16
        precision = train.hardware_trainer_args(cfg.hardware, idle_parameters=False)["precision"]
        half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
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

        def work() -> None:
            for _ in range(steps):
                self.step()

        return self.n * steps / timed(self.device, work)


def augment_rate(cfg: DictConfig, image: Tensor, reps: int, device: torch.device) -> float:
    """Images/s of the view augmentation alone (both views, one call), on one real batch, on the
    device that makes the views in training."""
    augment = train.build(cfg.augment).to(device)
    image, index = image.to(device), torch.arange(len(image), device=device)

    def views(epochs: int) -> None:
        for epoch in range(epochs):
            augment(image, torch.cat([sample_keys(cfg.seed, epoch, index, v) for v in range(2)]))

    views(1)  # untimed: the first call on a GPU loads its kernels
    return reps * len(image) / timed(device, lambda: views(reps))


# --- jobs -----------------------------------------------------------------------------------
def training_job(args: argparse.Namespace) -> dict[str, Any]:
    """Full step, bare ceiling and augmentation rate of one workload and method."""
    loadavg = os.getloadavg()[0]
    # validation is off: the timer leaves epoch ends out anyway, and it would cost minutes
    extra = ["trainer.max_epochs=1000", "trainer.limit_val_batches=0"]
    extra += [*QUICK_OVERRIDES] * args.quick + args.override
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cfg = train.compose_run(
            job_overrides(args.workload, args.method, args.data_file, extra), Path(tmp)
        )
        keep_freed_memory(cfg.hardware.malloc_keep_mb)  # as run() does: bare and views see it too
        gpu = cfg.hardware.accelerator == "gpu"
        timing = QUICK if args.quick else GPU_TIMING if gpu else WORKLOADS[args.workload].timing
        source = train.build(cfg.dataset.source)
        bare = BareStep(cfg, source.image_shape)
        image = torch.from_numpy(source.read(np.arange(cfg.method.batch_size)))
        augment = augment_rate(cfg, image, 2 if args.quick else 10, bare.device)
        bare.rate(timing.warmup)  # compiles, where compiled
        bare_rates: list[float] = []
        timer = StepTimer(timing, lambda: bare_rates.append(bare.rate(timing.steps)), bare.device)
        # run() takes no extra callbacks: the timer stands in for its LossTrace
        with mock.patch.object(loss_trace, "LossTrace", lambda: timer):
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
        "compile": cfg.hardware.compile,
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
    """`ssl-train` on 1 process and on `args.processes` (as SCALING[args.device] says), timed
    from the command line.

    Each setting runs for two epoch counts; the difference of the wall times over the difference
    of the steps cancels the start-up (imports, DDP rendezvous, data statistics, W&B).
    """
    setup = SCALING[args.device]
    epochs = (1, 2) if args.quick else (1, 5)
    counts = (1, args.processes)
    rates, global_batches, steps = [], [], []
    for processes in counts:
        hardware = setup.multi if processes > 1 else setup.single
        extra = [f"hardware={hardware}", f"hardware.devices={processes}"]
        data_file = args.data_file
        if setup.weak:  # each process keeps the batch of one, and the data grows with them
            data = WORKLOADS[args.workload].data
            data_file = prepare_data(args.data_file.parent, data, NUM_IMAGES * processes)
        else:  # the processes share the global batch of one
            extra.append(f"method.batch_size={SCALING_GLOBAL_BATCH // processes}")
        extra += ["trainer.limit_val_batches=0", *args.override]
        overrides = job_overrides(args.workload, args.method, data_file, extra)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            cfg = train.compose_run(overrides, Path(tmp))
        ds = cfg.dataset
        size = len(train.build(ds.source))
        train_split = make_split(size, ds.val_fraction, ds.test_fraction, ds.split_seed)["train"]
        global_batches.append(processes * cfg.method.batch_size)
        steps.append((epochs[1] - epochs[0]) * (len(train_split) // global_batches[-1]))
        walls = [command_seconds(overrides, max_epochs) for max_epochs in epochs]
        rates.append(global_batches[-1] * steps[-1] / (walls[1] - walls[0]))
    speedup = rates[1] / rates[0]
    return {
        "workload": "ddp_scaling",
        "data": args.workload,
        "method": args.method,
        "hardware": [setup.single, setup.multi],
        "scaling": "weak" if setup.weak else "strong",
        "processes": list(counts),
        "global_batch": global_batches,
        "images_per_s": [round(rate, 1) for rate in rates],
        "speedup": round(speedup, 3),
        "scaling_efficiency": round(speedup / args.processes, 3),  # speed-up per process
        "timed_steps": steps,
        "peak_rss_mb_largest_process": peak_rss_mb(resource.RUSAGE_CHILDREN),
    }


def command_seconds(overrides: list[str], max_epochs: int) -> float:
    """Wall time of `ssl-train <overrides>` for `max_epochs` epochs, in a folder of its own."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        command = [sys.executable, "-m", "ssl_lightning.train", *overrides]
        command += [f"trainer.max_epochs={max_epochs}", f"hydra.run.dir={tmp}"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-6000:])
    return seconds


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
    p.add_argument("--device", choices=list(SCALING), default="cpu", help="scaling: the set-up")
    p.add_argument("--processes", type=int, default=CPU_PROCESSES, help="scaling: against 1")
    args = p.parse_args()
    args.out.write_text(json.dumps(JOBS[args.job](args)))


if __name__ == "__main__":
    main()
