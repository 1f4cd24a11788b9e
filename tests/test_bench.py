"""`make bench`: the CPU bench end to end (`--quick`), the GPU mode without CUDA, and the parts of
the GPU bench that need no GPU (the speed-up table, the timed windows)."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ssl_lightning.methods.training_module import TrainingModule

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
BENCH = EXPERIMENTS / "bench.py"


@pytest.fixture
def experiments(monkeypatch) -> None:
    """bench.py and bench_jobs.py importable as the scripts import each other."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))


def test_quick_bench_prints_and_writes_one_sane_result(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--workloads", "natural"]
    command += ["--methods", "simclr", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=True)
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert printed == json.loads(out.read_text())
    (result,) = printed
    assert (result["workload"], result["method"], result["backbone"]) == (
        "natural",
        "simclr",
        "resnet18_cifar",
    )
    assert result["image_shape"] == [3, 32, 32] and result["batch_size"] == 16
    windows = len(result["windows_images_per_s"])
    assert windows == len(result["windows_bare_images_per_s"]) >= 1
    assert result["timed_steps"] >= windows
    for key in ("images_per_s", "bare_images_per_s", "efficiency", "augment_images_per_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert math.isfinite(result["train_loss_first_step"])
    assert 100 < result["peak_rss_mb"] < 100_000
    assert (result["precision"], result["compile"]) == ("32-true", False)


def test_gpu_bench_without_cuda_says_so_in_one_line(tmp_path):
    out = tmp_path / "bench_gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, also on a machine that has one
    command = [sys.executable, str(BENCH), "--device", "gpu", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "bench: no CUDA device on this machine; GPU bench skipped (CPU bench: make bench)\n",
        "",
    )
    assert not out.exists()


def test_speedups_pair_the_cells_that_differ_in_one_switch(experiments):
    def cell(precision: str, compiled: bool, ours: float, bare: float) -> dict:
        setting = {"workload": "jets", "method": "simclr", "precision": precision}
        return setting | {"compile": compiled, "images_per_s": ours, "bare_images_per_s": bare}

    cells = [  # the compiled fp32 cell is missing, as in a run cut short: no row needs it
        cell("bf16-mixed", False, 300.0, 400.0),
        cell("32-true", False, 100.0, 200.0),
        cell("bf16-mixed", True, 600.0, 1000.0),
    ]
    same = {"workload": "jets", "method": "simclr"}
    bf16 = {"speedup": "bf16_over_fp32", **same, "compile": False, "ours": 3.0, "bare": 2.0}
    compiled = {"speedup": "compiled_over_eager", **same, "precision": "bf16-mixed"}
    assert importlib.import_module("bench").speedups(cells) == [
        bf16,
        compiled | {"ours": 2.0, "bare": 2.5},
    ]


def test_step_timer_windows_skip_warmup_and_never_span_an_epoch_end(experiments):
    jobs = importlib.import_module("bench_jobs")
    calls: list[int] = []
    timer = jobs.StepTimer(
        jobs.Timing(warmup=2, steps=3, windows=2),
        between=lambda: calls.append(timer.steps_seen),
        device=torch.device("cpu"),
    )
    trainer = SimpleNamespace(should_stop=False, num_training_batches=5)
    timer.on_train_start(trainer, None)
    outputs = TrainingModule.step_output(torch.tensor(1.0))
    stopped_at = None
    for step in range(1, 12):
        timer.on_train_batch_end(trainer, None, outputs, None, (step - 1) % 5)
        if trainer.should_stop and stopped_at is None:
            stopped_at = step
    # steps 1-2 warm up, 3-5 are window 1, 6 is dropped (its interval spans the epoch's end),
    # 7-9 are window 2, and the fit stops there
    assert (calls, stopped_at, len(timer.window_rates(batch_size=8))) == ([5, 9], 9, 2)
    with pytest.raises(RuntimeError, match="holds no window"):
        timer.on_train_start(SimpleNamespace(num_training_batches=3), None)
