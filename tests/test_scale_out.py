"""Scale-out: exact DDP, multirun with DDP, the submitit launcher, resume, determinism."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments.preemption import session_processes
from ssl_lightning.train import resume_checkpoint, run
from tests.helpers import compose_run

COMMON = ["dataset=synthetic", "augment=natural", "logger=csv", "trainer.enable_progress_bar=false"]


def ssl_train(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """Start `ssl-train` as a user would, in `cwd`."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_lightning.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def weights(ckpt: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


def assert_same_weights(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=1e-6, msg=key)


def test_ddp_multirun_runs_each_job_once_and_equals_one_process(tmp_path):
    """2 gloo ranks x batch 32 == 1 process x batch 64 (same samples, same augmentation draws).

    In float64: the equality is exact there; in float32 Barlow Twins amplifies last-bit
    differences of the batched augmentation (batch 32 vs 64 kernels) to ~1e-3 in a step."""
    overrides = [*COMMON, "debug=fast", "trainer.deterministic=true", "hardware.precision=64-true"]
    proc = ssl_train(["-m", "hardware=ddp_cpu", "method=simclr,barlow_twins", *overrides], tmp_path)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps  # rank 1 must not re-run the sweep into a folder of its own
    assert out.count("Launching 2 jobs locally") == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, method in zip(jobs, ["simclr", "barlow_twins"], strict=True):
        results = json.loads((job / "results.json").read_text())
        assert (results["method"], results["global_batch"]) == (method, 64)
        assert (job / "ddp_rank_1.log").is_file()  # rank 1 ran this job, in this folder
        single = run(
            compose_run(
                [f"method={method}", *overrides, "method.batch_size=64"],
                tmp_path / f"single_{method}",
            )
        )
        assert_same_weights(
            weights(results["checkpoints"]["last"]),
            weights(single["checkpoints"]["last"]),
            rtol=1e-4,
        )


def test_every_probe_mode_trains_and_tests_under_ddp(tmp_path, pretrained):
    """LP-FT's linear phase leaves the backbone without gradients: DDP must not wait for them.
    The modes that start from a checkpoint run as one sweep, scratch (which takes none) alone."""
    modes = ["linear", "finetune", "lpft"]
    common = ["hardware=ddp_cpu", "method=probe", *COMMON, "debug=fast", "trainer.max_epochs=2"]
    sweep = ["-m", *common, f"method.mode={','.join(modes)}", "method.lp_epochs=1"]
    sweep.append(f"method.pretrained={pretrained['checkpoints']['last']}")
    scratch = [*common, "method.mode=scratch", f"hydra.run.dir={tmp_path / 'scratch'}"]
    for args in (sweep, scratch):
        proc = ssl_train(args, tmp_path)
        out = finish(proc)
        assert proc.returncode == 0, out[-3000:]
    found = sorted(tmp_path.glob("multirun/*/*/results.json"), key=lambda p: int(p.parent.name))
    assert len(found) == len(modes), out[-3000:]
    for path in [*found, tmp_path / "scratch" / "results.json"]:
        results = json.loads(path.read_text())
        assert results["global_batch"] == 64  # 2 ranks x 32
        assert 0 <= results["metrics"]["test/auroc"] <= 1


def test_every_rank_runs_the_users_own_config_name_and_dir(tmp_path):
    """Rank 1 must compose the same config as rank 0: with the package's train.yaml instead of the
    user's, it would use another batch size and the ranks would wait on each other."""
    user_conf = tmp_path / "my_conf"
    user_conf.mkdir()
    (user_conf / "mine.yaml").write_text(
        "defaults:\n  - train\n  - _self_\nmethod:\n  batch_size: 16\n"
    )
    args = ["--config-dir", str(user_conf), "--config-name", "mine", "hardware=ddp_cpu"]
    proc = ssl_train([*args, *COMMON, "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    out = finish(proc, timeout=180)
    assert proc.returncode == 0, out[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["global_batch"] == 32  # 2 ranks x the user's 16
    assert (tmp_path / "run" / "ddp_rank_1.log").is_file()


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    proc = ssl_train(
        ["-m", "hydra/launcher=local", "method=simclr,barlow_twins", "debug=fast", *COMMON],
        tmp_path,
    )
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    found = sorted(tmp_path.glob("multirun/*/*/results.json"))
    assert [json.loads(p.read_text())["method"] for p in found] == ["simclr", "barlow_twins"]


RESUMABLE = [*COMMON, "method.batch_size=64", "trainer.max_epochs=3", "trainer.deterministic=true"]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, "training ended before the checkpoint appeared"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "killed"
    proc = ssl_train([*RESUMABLE, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] < 3
    resumed = ssl_train([*RESUMABLE, f"hydra.run.dir={run_dir}"], tmp_path)  # resumes by itself
    out = finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    assert "Restoring states from the checkpoint" in out
    uninterrupted = run(compose_run(RESUMABLE, tmp_path / "whole"))
    resumed_results = json.loads((run_dir / "results.json").read_text())
    assert_same_weights(
        weights(resumed_results["checkpoints"]["last"]),
        weights(uninterrupted["checkpoints"]["last"]),
        rtol=1e-5,
    )
    for key in ("val/loss", "val/online_acc"):
        assert resumed_results["metrics"][key] == pytest.approx(
            uninterrupted["metrics"][key], rel=1e-5
        )


DDP_RESUMABLE = [
    *COMMON,
    "hardware=ddp_cpu",
    "dataset.source.num_samples=3000",  # 2,100 to train on: 32 steps of 2 x 32 an epoch
    "method.batch_size=32",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
]


def test_a_signal_to_rank_0_stops_every_ddp_rank_at_one_step_and_resumes_exactly(tmp_path):
    """SIGTERM to rank 0 alone, mid-epoch: both ranks stop within 30 s at the same step with one
    checkpoint (the ranks vote), and the resumed run continues with the next batch, ending with
    the weights of an uninterrupted run. (experiments/preemption.py repeats this at random
    moments, with SIGUSR1 and all-rank signals too.)"""
    run_dir = tmp_path / "stopped"
    args = [*DDP_RESUMABLE, f"hydra.run.dir={run_dir}"]
    proc = ssl_train(args, tmp_path, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for(last, proc)  # the end of epoch 0: the signal lands in epoch 1's validation or steps
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out = finish(proc, timeout=30)
    while session_processes(proc.pid) and time.time() - sent < 30:
        time.sleep(0.1)
    assert not session_processes(proc.pid), "a rank outlived the stop by 30 s"
    assert proc.returncode == 143, out[-3000:]
    assert f"stopped by a signal (checkpoint: {last})" in out
    stopped = torch.load(last, weights_only=False)
    assert stopped["epoch"] == 1 and stopped["global_step"] % 32 != 0  # mid-epoch
    assert sorted(p.name for p in last.parent.glob("last*.ckpt")) == ["last.ckpt"]
    resumed = ssl_train(args, tmp_path)
    out = finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    whole = ssl_train([*DDP_RESUMABLE, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)
    out = finish(whole)
    assert whole.returncode == 0, out[-3000:]
    assert_same_weights(
        weights(last), weights(tmp_path / "whole" / "checkpoints" / "last.ckpt"), rtol=0
    )


def test_a_resumed_run_keeps_saving_to_last_ckpt_after_a_first_epoch_stop(tmp_path):
    """A stop before the first epoch end saves last.ckpt before ModelCheckpoint has saved anything;
    the resumed run must overwrite it, not fork `last-v1.ckpt` and leave last.ckpt behind."""
    run_dir = tmp_path / "early"
    long_epoch = [*COMMON, "dataset.source.num_samples=8192", "method.batch_size=16"]
    args = [*long_epoch, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    proc = ssl_train(args, tmp_path)
    wait_for(run_dir / "split.npz", proc)  # set up: training starts within a second or two
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == 143, out[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=False)
    assert stopped["epoch"] == 0 and 0 < stopped["global_step"] < 384  # stopped in epoch 0
    resumed = ssl_train(args, tmp_path)
    out = finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    assert sorted(p.name for p in last.parent.glob("last*.ckpt")) == ["last.ckpt"]
    assert torch.load(last, weights_only=False)["global_step"] == 384  # 6,144 samples / 16


def test_a_requeued_job_resumes_from_the_newest_of_last_and_hpc_checkpoints(tmp_path):
    """Lightning's SLURM auto-requeue saves hpc_ckpt_<n>.ckpt in the run folder on SIGUSR1, after
    the epoch-end last.ckpt: the requeued job must take it, not the older last.ckpt."""
    cfg = OmegaConf.create({"ckpt_path": None})
    assert resume_checkpoint(cfg, tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"epoch end")
    assert resume_checkpoint(cfg, tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"mid-epoch, later")
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    assert resume_checkpoint(cfg, tmp_path) == str(hpc)
    os.utime(last, None)  # an epoch end after the requeue: last.ckpt is the newest again
    os.utime(hpc, ns=(1_000_000_000, 1_000_000_000))
    assert resume_checkpoint(cfg, tmp_path) == str(last)
    given = OmegaConf.create({"ckpt_path": "/elsewhere/epoch3.ckpt"})
    assert resume_checkpoint(given, tmp_path) == "/elsewhere/epoch3.ckpt"


def train_losses(run_dir: Path) -> list[float]:
    with open(next(run_dir.glob("csv/*/metrics.csv"))) as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]


def test_same_seed_and_deterministic_mode_give_an_identical_loss_curve(tmp_path):
    overrides = [
        *COMMON,
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "method.batch_size=32",
        "trainer.deterministic=true",
        "method=barlow_twins",
    ]
    first = run(compose_run(overrides, tmp_path / "a"))
    second = run(compose_run(overrides, tmp_path / "b"))
    curve = train_losses(Path(first["run_dir"]))
    assert len(curve) == 24 and curve == train_losses(Path(second["run_dir"]))
    other_seed = run(compose_run([*overrides, "seed=1"], tmp_path / "c"))
    assert train_losses(Path(other_seed["run_dir"])) != curve
    for key in ("git_commit", "packages", "dataset_fingerprint"):
        assert first[key], key
    assert first["packages"]["torch"] == metadata.version("torch")


def test_probe_metrics_do_not_depend_on_the_number_of_processes(tmp_path):
    """Validation and test sets of 37 samples (2 x 16 + 5, odd): 2 ranks pad their last batches
    to equal shapes, yet every metric (AUROC, accuracy, the loss) counts each sample once and
    equals one process's. Training is equal too: 2 ranks x batch 16 == 1 process x batch 32."""
    overrides = [
        *COMMON,
        "method=probe",
        "method.mode=scratch",
        "dataset.source.num_samples=296",  # val and test: 37 samples each
        "loader.eval_batch_size=16",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.deterministic=true",
        "hardware.precision=64-true",
    ]
    ddp_dir = tmp_path / "ddp"
    proc = ssl_train(
        ["hardware=ddp_cpu", *overrides, "method.batch_size=16", f"hydra.run.dir={ddp_dir}"],
        tmp_path,
    )
    out = finish(proc, timeout=180)
    assert proc.returncode == 0, out[-3000:]
    ddp = json.loads((ddp_dir / "results.json").read_text())["metrics"]
    single = run(compose_run([*overrides, "method.batch_size=32"], tmp_path / "single"))["metrics"]
    evaluated = sorted(key for key in single if key.startswith(("val/", "test/")))
    assert evaluated == sorted(key for key in ddp if key.startswith(("val/", "test/")))
    for key in evaluated:
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
