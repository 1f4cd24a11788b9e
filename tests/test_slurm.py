"""The SLURM launcher as users submit it: sbatch scripts from submitit's own builder, the README's
recipes, and the requeue limit."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from ssl_lightning.callbacks.preemption import requeue_slurm_job
from ssl_lightning.train import CONFIG_DIR

README = Path(__file__).resolve().parents[1] / "README.md"


def compose_sweep(overrides: list[str], sweep_dir: Path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def sbatch_directives(overrides: list[str], tmp_path: Path, monkeypatch) -> dict[str, str]:
    """`#SBATCH` directives of the job the launcher would submit (submitit's own builder; the
    submission itself, `map_array`, is intercepted)."""
    srun = tmp_path / "bin" / "srun"  # submitit refuses to build a script where srun is missing
    srun.parent.mkdir(exist_ok=True)
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")
    cfg = compose_sweep(overrides, tmp_path)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    executors = []
    monkeypatch.setattr(
        submitit.AutoExecutor, "map_array", lambda self, *args: executors.append(self) or []
    )
    launcher.launch([["method=simclr"]], initial_job_idx=0)
    script = executors[0]._executor._make_submission_file_text("python -m job", "uid")
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("overrides", "nodes", "gpus"),
    [(["hardware=gpu"], 1, 1), (["hardware=ddp"], 1, 8), (["hardware=multinode"], 4, 8)],
)
def test_sbatch_asks_for_what_lightning_will_use(overrides, nodes, gpus, tmp_path, monkeypatch):
    directives = sbatch_directives(
        [*overrides, "hydra.launcher.partition=gpu"], tmp_path, monkeypatch
    )
    assert directives["nodes"] == str(nodes)
    assert directives["ntasks-per-node"] == str(gpus)  # one task (one Lightning process) per GPU
    assert directives["gpus-per-node"] == str(gpus)
    assert directives["cpus-per-task"] == "8"
    assert directives["partition"] == "gpu"
    assert directives["time"] == "1440"
    assert directives["signal"] == "USR1@120"  # our preemption handler's signal, not submitit's
    assert set(directives) == {
        "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "partition", "time",
        "signal", "job-name", "output", "error", "open-mode", "wckey",
    }  # fmt: skip


def readme_recipes() -> list[list[str]]:
    """The `ssl-train -m hydra/launcher=slurm ...` commands of the README, as argument lists."""
    text = README.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        shlex.split(line)[2:]
        for line in lines
        if line.startswith("ssl-train -m hydra/launcher=slurm")
    ]


def test_the_readme_has_the_three_recipes():
    assert [next(a for a in r if a.startswith("hardware=")) for r in readme_recipes()] == [
        "hardware=gpu",
        "hardware=ddp",
        "hardware=multinode",
    ]


@pytest.mark.parametrize("recipe", readme_recipes(), ids=lambda r: r[1])
def test_readme_recipes_fit_their_data_and_imply_a_sane_learning_rate(
    recipe, tmp_path, monkeypatch
):
    first_of_each_sweep = [arg.split(",")[0] for arg in recipe[1:]]
    directives = sbatch_directives(first_of_each_sweep, tmp_path, monkeypatch)
    cfg = compose_sweep(first_of_each_sweep, tmp_path)
    processes = int(directives["nodes"]) * int(directives["ntasks-per-node"])
    assert processes == cfg.hardware.devices * cfg.hardware.num_nodes
    global_batch = cfg.method.batch_size * processes
    dataset = cfg.dataset
    train = dataset.source.num_jets - 2 * round(dataset.source.num_jets * dataset.val_fraction)
    steps_per_epoch = train // global_batch
    assert steps_per_epoch >= 16, (global_batch, train)
    lr = cfg.method.optimizer.lr * global_batch / 256
    assert lr <= 2.4  # SimCLR's LARS rule at batch 2,048; the recipes' comments say so
    assert f"{global_batch:,} a step" in README.read_text() or global_batch == 256


def test_a_requeue_limit_stops_requeueing(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    for restarts in range(4):
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
        message = requeue_slurm_job(max_requeues=3)
        assert ("not requeued" in message) == (restarts == 3), message
    assert calls.read_text().splitlines() == ["requeue 4242"] * 3


def test_usr1_outside_slurm_does_not_requeue(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert "not requeued" in requeue_slurm_job(max_requeues=3)
