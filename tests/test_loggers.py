"""The loggers the README names, and W&B run ids: one per job, whatever the number of processes
that start it at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from ssl_lightning.loggers import SLURM_JOB_KEYS, run_id
from ssl_lightning.train import build
from tests.conftest import with_fast
from tests.helpers import compose_run

TASKS = 8  # one SLURM task per GPU of an 8-GPU node, all started at the same moment


def _task_run_id(path: str, start: mp.synchronize.Barrier, out: mp.Queue) -> None:
    start.wait()
    out.put(run_id(Path(path)))


def _ids_of_tasks_started_at_once(path: Path) -> list[str]:
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(TASKS), ctx.Queue()
    tasks = [ctx.Process(target=_task_run_id, args=(str(path), start, out)) for _ in range(TASKS)]
    for task in tasks:
        task.start()
    ids = [out.get(timeout=60) for _ in tasks]
    for task in tasks:
        task.join(timeout=60)
    return ids


@pytest.mark.parametrize("trial", range(5))
def test_every_task_of_a_slurm_job_agrees_on_one_id_and_a_requeue_keeps_it(
    tmp_path, monkeypatch, trial
):
    for key in SLURM_JOB_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", str(4242 + trial))
    path = tmp_path / "wandb_run_id"
    ids = _ids_of_tasks_started_at_once(path)
    assert len(set(ids)) == 1, ids
    assert path.read_text().strip() == ids[0]
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued job: same job id, same folder
    assert run_id(path) == ids[0]


def test_another_job_in_another_folder_gets_another_id(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    first = run_id(tmp_path / "a" / "wandb_run_id")
    monkeypatch.setenv("SLURM_JOB_ID", "8")
    assert run_id(tmp_path / "b" / "wandb_run_id") != first
    assert run_id(tmp_path / "a" / "wandb_run_id") == first  # the folder's id, once decided


@pytest.mark.parametrize(
    ("logger", "pattern"),
    [("csv", "csv/*/metrics.csv"), ("tensorboard", "tensorboard/*/events.out.tfevents.*")],
)
def test_each_file_logger_writes_its_files(logger, pattern, train, tmp_path):
    """Every logger the README offers works after the README's install (tensorboard was not a
    dependency, so `logger=tensorboard` failed)."""
    train([f"logger={logger}"])
    assert list((tmp_path / "run").glob(pattern))


def test_a_wandb_run_is_named_after_its_folder_and_grouped_by_the_sweep(tmp_path):
    """Job 3 of a sweep runs in <sweep folder>/3: W&B shows it as simclr-3 in the sweep's group."""
    sweep = tmp_path / "2026-12-01_10-00-00"
    cfg = compose_run(with_fast(["logger=wandb", "logger.wandb.mode=offline"]), sweep / "3")
    run = build(cfg.logger.wandb).experiment
    try:
        assert (run.name, run.group) == ("simclr-3", sweep.name)
    finally:
        run.finish()
