"""Experiment loggers. W&B goes offline by itself when no API key is configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import wandb
from lightning.pytorch.loggers import WandbLogger

from ssl_lightning.atomic_files import write_text_atomically
from ssl_lightning.data.sources.base import stable_hash

SLURM_JOB_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")  # kept on requeue


def wandb_api_key_configured() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(
    project: str,
    entity: str | None,
    mode: str,
    save_dir: str,
    tags: list[str],
    name: str | None = None,
    group: str | None = None,
) -> WandbLogger:
    """A WandbLogger writing into the run folder; `mode=auto` never blocks on a login prompt.

    Its run id is kept in the run folder, so resuming the run (same folder) resumes the W&B run;
    `name` and `group` (conf/logger/wandb.yaml) tell a sweep's runs apart and keep them together
    (None: W&B's random name, no group).
    """
    if mode not in ("auto", "offline", "online"):
        raise ValueError(f"logger.wandb.mode={mode!r}: use auto, offline or online")
    offline = mode == "offline" or (mode == "auto" and not wandb_api_key_configured())
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    logger = WandbLogger(
        project=project,
        entity=entity,
        save_dir=save_dir,
        offline=offline,
        tags=list(tags),
        name=name,
        group=group,
        id=run_id(Path(save_dir) / "wandb_run_id"),
        resume="allow",
    )
    # Lightning passes W&B `anonymous=None`, which W&B (0.31) warns "has no effect" about
    logger._wandb_init.pop("anonymous", None)
    return logger


def wandb_sync_dir(logger: WandbLogger) -> str | None:
    """The folder of the logger's W&B run that `wandb sync` takes (offline-run-* or run-*, with
    the run's .wandb file), or None on ranks other than 0, which hold no run."""
    run = logger.experiment
    return run.settings.sync_dir if isinstance(run, wandb.Run) else None


def run_id(path: Path) -> str:
    """The W&B run id kept in the run folder, so every rank, a resumed run and a requeued job log
    to the same W&B run.

    A new id must be the same in every process without them talking: under SLURM all tasks of a
    job start at once, so it is derived from the job (its id survives requeues) and the folder;
    elsewhere the other ranks start after rank 0 wrote it (Lightning launches them from rank 0).
    """
    if path.is_file():
        return path.read_text().strip()
    job = tuple(os.environ.get(key) for key in SLURM_JOB_KEYS)
    derived = stable_hash("wandb", job, str(path.resolve()))[:8]  # short lowercase hex, as W&B's
    new_id = derived if job[0] else secrets.token_hex(4)
    write_text_atomically(path, new_id + "\n")
    return new_id
