"""`make bench --quick` on one small workload: it runs end to end and its JSON is complete."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench.py"


def test_quick_bench_prints_and_writes_one_sane_result(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH), "--quick", "--workloads", "natural"]
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
