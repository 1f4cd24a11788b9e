"""Hydra callbacks of `ssl-train` (conf/hydra/callbacks/): a run folder held by one run at a time,
and a multirun that runs every job and ends with one line naming the jobs that failed.

`RunFolderHeld` takes the run folder's lock before Hydra writes into it (`.hydra/`, the log), so
a second run started into a folder in use is refused in one line and changes nothing there.

Hydra runs the jobs of `ssl-train -m` one after another and stops at the first one that exits.
So a failed job's `main()` reports its error, leaves `failed.json` in its folder and returns;
`FailedJobs` reads those records when the sweep ends, prints one line and exits non-zero.
Records are files, not memory: the submitit launchers run jobs in other processes and machines.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ssl_lightning.atomic_files import run_folder_held, write_text_atomically
from ssl_lightning.errors import UserError, error_line

FAILED = "failed.json"  # in a failed job's folder: its number, overrides, error and exit status
# where launchers put a process's rank, read in Lightning's order (torchrun, Lightning's own DDP
# children, SLURM tasks, LSF); NODE_RANK: the node of a multi-node launch by hand
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def leads_the_job() -> bool:
    """Whether this process is its job's global rank 0, which alone holds the run folder and
    reports: the other DDP ranks run the same job. Read from the environment, as Lightning
    does before it starts (and without importing it: a refusal comes at once)."""
    rank = next((os.environ[key] for key in RANK_VARIABLES if key in os.environ), "0")
    return rank == "0" and os.environ.get("NODE_RANK", "0") == "0"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(run_dir: Path, message: str, status: int) -> None:
    job = HydraConfig.get()
    record = {
        "job": job.job.num,
        "overrides": list(job.overrides.task),
        "error": message,
        "status": status,
    }
    write_text_atomically(run_dir / FAILED, json.dumps(record) + "\n")


class RunFolderHeld(Callback):
    """Holds the run folder from before Hydra writes into it (a single run) or from the start of
    each job (a multirun's, whose folder Hydra made a moment before) to its end. A refusal ends
    the process with one line and status 2."""

    def __init__(self) -> None:
        self.held = ExitStack()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._hold(Path(config.hydra.run.dir))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.held.close()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        if config.hydra.mode == RunMode.MULTIRUN and self._hold(run_dir):
            (run_dir / FAILED).unlink(missing_ok=True)  # a job run again has not failed yet

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self.held.close()

    def _hold(self, run_dir: Path) -> bool:
        """Hold `run_dir` if this process leads its job; whether it does."""
        if not leads_the_job():
            return False
        try:
            self.held.enter_context(run_folder_held(run_dir))
        except UserError as err:
            print(error_line(str(err)), file=sys.stderr)
            raise SystemExit(2) from None
        return True


class FailedJobs(Callback):
    """When a multirun ends with failed jobs: one line naming them (by the overrides the sweep
    varies), and exit status 2 if each failed on bad input, else 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = sorted(
            (json.loads(path.read_text()) for path in sweep_dir.rglob(FAILED)),
            key=lambda record: record["job"],
        )
        if not records:
            return
        swept = {
            override.get_key_element()
            for override in OverridesParser.create().parse_overrides(config.hydra.overrides.task)
            if override.is_sweep_override()
        }
        jobs = ", ".join(_job_name(record, swept) for record in records)
        print(
            f"error: {len(records)} job(s) of the multirun failed: {jobs}; each error is above "
            f"and in the job's {FAILED} under {sweep_dir}",
            file=sys.stderr,
        )
        raise SystemExit(2 if all(record["status"] == 2 for record in records) else 1)


def _job_name(record: dict[str, Any], swept: set[str]) -> str:
    """'#1 (method.temperature=0)': the job's number and its values of the swept keys."""
    values = [o for o in record["overrides"] if o.split("=", 1)[0] in swept]
    return f"#{record['job']}" + (f" ({' '.join(values)})" if values else "")
