"""Signals at random moments under 2-process DDP: every rank must stop within the timeout with one
checkpoint, and the resumed run must end with the weights of an uninterrupted one.

Each trial starts `ssl-train hardware=ddp_cpu` in its own session (so the whole job can be
signalled, as SLURM signals every task), sends SIGTERM or SIGUSR1 to every rank, to rank 0 or to
rank 1 at a random moment, waits (bounded) for every process to exit, checks the run folder,
resumes the run to its end and compares the final weights with an uninterrupted run. SIGUSR1
trials run under a fake SLURM job (`SLURM_JOB_ID`, an `scontrol` that records its calls), so the
requeue is checked too.

    python experiments/preemption.py --trials 12 --out docs/results/preemption_<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from ssl_lightning.callbacks.preemption import ddp_children

RUN = [
    "hardware=ddp_cpu",
    "dataset=synthetic",
    "dataset.source.num_samples=3000",
    "augment=natural",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "trainer.max_epochs=3",
    "method.batch_size=32",
]
TARGETS = ("all", "rank0", "rank1")


def start(run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ssl-train` writing into `run_dir`, in a session of its own (rank 0 leads it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_lightning.train", *RUN, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: rank 0 leads it, rank 1 is its child."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if v.is_floating_point()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def trial(
    index: int, rng: random.Random, root: Path, reference: dict, duration: float, timeout: float
) -> dict:
    signum = rng.choice([signal.SIGTERM, signal.SIGUSR1])
    target = rng.choice(TARGETS)
    delay = rng.uniform(0.1, duration)
    run_dir = root / f"trial_{index}"
    run_dir.mkdir()
    calls = run_dir / "scontrol_calls"
    fake = root / "bin"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    if signum == signal.SIGUSR1:
        env |= {"SLURM_JOB_ID": str(1000 + index), "PATH": f"{fake}:{env['PATH']}"}
        env |= {"SCONTROL_CALLS": str(calls)}
    proc = start(run_dir, env)
    time.sleep(delay)
    if proc.poll() is not None:
        out, _ = proc.communicate()
        record = {"trial": index, "outcome": "ended before the signal", "delay_s": round(delay, 2)}
        return record | {"exit_code": proc.returncode, "tail": out[-1500:]}
    if target == "all":
        os.killpg(proc.pid, signum)
    elif target == "rank0":
        proc.send_signal(signum)
    else:
        ranks = ddp_children(proc.pid)
        target = f"rank1 (pid {ranks})" if ranks else "rank0 (rank 1 not started yet)"
        for pid in ranks or [proc.pid]:
            os.kill(pid, signum)
    sent = time.time()
    try:
        out, _ = proc.communicate(timeout=timeout)
        while session_processes(proc.pid) and time.time() - sent < timeout:
            time.sleep(0.1)
        hung = bool(session_processes(proc.pid))
    except subprocess.TimeoutExpired:
        out, hung = "", True
    exited_s = time.time() - sent
    if hung:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    last = run_dir / "checkpoints" / "last.ckpt"
    record = {
        "trial": index,
        "signal": signal.Signals(signum).name,
        "target": target,
        "delay_s": round(delay, 2),
        "exit_code": proc.returncode,
        "all_ranks_exited_s": round(exited_s, 2),
        "hung": hung,
        "stopped_at_step": (
            torch.load(last, weights_only=False)["global_step"] if last.is_file() else None
        ),
        "versioned_last": sorted(p.name for p in last.parent.glob("last-v*.ckpt")),
        "requeue_calls": calls.read_text().splitlines() if calls.is_file() else [],
    }
    resumed = start(run_dir, {**os.environ, "WANDB_MODE": "offline"})
    resumed_out, _ = resumed.communicate(timeout=600)
    record["resume_exit_code"] = resumed.returncode
    if resumed.returncode == 0:
        record["max_weight_difference"] = max_difference(final_weights(run_dir), reference)
    else:
        record["resume_tail"] = resumed_out[-2000:]
    if proc.returncode not in (0, 143):
        record["tail"] = out[-2000:]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("preemption_results.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        scontrol = root / "bin" / "scontrol"
        scontrol.write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_CALLS"\n')
        scontrol.chmod(0o755)
        whole = root / "uninterrupted"
        whole.mkdir()
        began = time.time()
        proc = start(whole, {**os.environ, "WANDB_MODE": "offline"})
        out, _ = proc.communicate()
        assert proc.returncode == 0, out[-3000:]
        duration = time.time() - began
        reference = final_weights(whole)
        trials = []
        for index in range(args.trials):
            trials.append(trial(index, rng, root, reference, duration, args.timeout))
            print(json.dumps(trials[-1]), flush=True)
    summary = {
        "command": ["ssl-train", *RUN],
        "uninterrupted_s": round(duration, 1),
        "timeout_s": args.timeout,
        "trials": trials,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
