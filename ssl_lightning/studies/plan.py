"""Which probe jobs a label-efficiency study runs, with what budget, and which are still to run.

Every probe run gets about the same number of optimizer steps whatever its label fraction (1% of
the labels for 30 epochs would be a few steps, 100% for 30 epochs hours): the epochs follow from
the labelled training size. Each job is a dict; Hydra sweeps over the list of these dicts
(`+study_job=...`), so one multirun holds exactly the jobs that have no results.json yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCRATCH = "none"  # the `pretrained` of a job that starts from random weights
# the probe settings each job sets from its own dict (Hydra resolves them when the job runs)
JOB_OVERRIDES = (
    "method.task=${study_job.task}",
    "method.target=${study_job.target}",
    "method.mode=${study_job.mode}",
    "method.pretrained=${study_job.backbone}",
    "method.lp_epochs=${study_job.lp_epochs}",
    "dataset.label_fraction=${study_job.fraction}",
    "seed=${study_job.seed}",
    "trainer.max_epochs=${study_job.epochs}",
    "method.scheduler.warmup_epochs=${study_job.warmup_epochs}",
    "method.batch_size=${study_job.batch_size}",
    "hydra.sweep.subdir=${study_job.name}",
)


def probe_budget(
    num_labelled: int,
    batch_size: int,
    steps: int,
    max_epochs: int,
    lp_share: float,
    warmup_share: float,
) -> dict[str, Any]:
    """Batch, epochs, LP-FT linear epochs and warm-up epochs for about `steps` optimizer steps.

    The batch shrinks to the labelled set when that is smaller (1% of the jets: one full batch
    an epoch); `max_epochs` caps the tiny fractions, whose epochs cost more in validation and
    checkpoints than in training. LP-FT's linear phase and the warm-up are the same shares of the
    run at every fraction.
    """
    batch = min(batch_size, num_labelled)
    epochs = min(max_epochs, math.ceil(steps / (num_labelled // batch)))
    return {
        "batch_size": batch,
        "epochs": epochs,
        "lp_epochs": max(1, round(lp_share * epochs)),
        "warmup_epochs": round(warmup_share * epochs, 3),
    }


def model_label(job: dict[str, Any]) -> str:
    """What a line in the table and plots stands for: `simclr-linear`, ..., or `scratch`."""
    return job["mode"] if job["pretrained"] == SCRATCH else f"{job['pretrained']}-{job['mode']}"


def job_name(job: dict[str, Any]) -> str:
    """The job's folder under the study's probes/ folder: task/model/fraction/seed."""
    return f"{job['task']}/{model_label(job)}/f{job['fraction']}/seed{job['seed']}"


def plan_jobs(
    tasks: dict[str, dict[str, Any]],
    checkpoints: dict[str, str],
    fractions: Iterable[float],
    seeds: Iterable[int],
    budgets: dict[float, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every (task, pretrained method x mode | scratch, fraction, seed) job of the study."""
    jobs = []
    for task, spec in tasks.items():
        models = [
            (name, mode)
            for mode in spec["modes"]
            for name in ([SCRATCH] if mode == "scratch" else checkpoints)
        ]
        for pretrained, mode in models:
            for fraction in fractions:
                for seed in seeds:
                    job = {
                        "task": task,
                        "target": spec["target"],
                        "mode": mode,
                        "pretrained": pretrained,
                        "backbone": checkpoints.get(pretrained),
                        "fraction": fraction,
                        "seed": seed,
                        **budgets[fraction],
                    }
                    jobs.append({**job, "name": job_name(job)})
    return jobs


def is_finished(run_dir: Path) -> bool:
    """A job is done once its results.json exists (written atomically at the very end)."""
    return (run_dir / "results.json").is_file()


def pending(jobs: list[dict[str, Any]], probes_dir: Path) -> list[dict[str, Any]]:
    """The jobs whose run folder has no results.json yet: a rerun continues where it stopped."""
    return [job for job in jobs if not is_finished(probes_dir / job["name"])]


def sweep_value(jobs: list[dict[str, Any]]) -> str:
    """`+study_job=` value: Hydra's choice sweep over the jobs' dicts, one job per element."""
    return ",".join(hydra_dict(job) for job in jobs)


def hydra_dict(job: dict[str, Any]) -> str:
    """A dict in Hydra's override grammar; strings are quoted (paths hold '/', ':' and '=')."""
    items = []
    for key, value in job.items():
        if value is None:
            text = "null"
        elif isinstance(value, str):
            text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        else:
            text = repr(value)
        items.append(f"{key}:{text}")
    return "{" + ",".join(items) + "}"
