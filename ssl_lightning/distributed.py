"""Lightning's DDP launch under Hydra, fixed for multirun.

Lightning starts ranks 1..N-1 by re-running the command line. Under `ssl-train -m ...` that command
is the whole sweep, so every extra rank re-ran every job into a sweep folder of its own. Children
must instead run exactly the current job: its own overrides, in its own output folder. And after
a job the launching process must forget the job's process group and DDP environment variables,
or the next job of the sweep would reuse the dead group instead of starting its own ranks.
A job that crashes while distributed ends the sweep: its other ranks are stuck in a collective,
and the next job would wait on them until Lightning's watchdog kills the whole process.

The child command is Lightning's private `subprocess_script._hydra_subprocess_cmd`, replaced here
and nowhere else; `use_job_command` refuses to run on a Lightning without it (tests check it too).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from lightning import __version__ as lightning_version
from lightning.pytorch.strategies.launchers import subprocess_script

DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
PATCHED_HOOK = "_hydra_subprocess_cmd"  # Lightning's private builder of the children's command
DDP_CHILD_JOB = "ddp_rank_"  # Hydra job name of the ranks Lightning starts: ddp_rank_<local rank>


def job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that runs this Hydra job (not the sweep) as DDP rank `local_rank`."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "ssl_lightning.train"]
    command += [f"--config-name={hydra_cfg.job.config_name}"]  # a user's own root config too
    command += [
        f"--config-dir={source.path}"
        for source in hydra_cfg.runtime.config_sources
        if source.provider == "command-line"
    ]
    command += list(hydra_cfg.overrides.task)
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name={DDP_CHILD_JOB}{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def use_job_command() -> None:
    """Make Lightning start DDP children with `job_subprocess_cmd`; fail loudly, before any rank
    starts, when a Lightning upgrade removed or renamed the hook (children would rerun the
    whole sweep)."""
    if not callable(getattr(subprocess_script, PATCHED_HOOK, None)):
        raise RuntimeError(
            f"lightning {lightning_version} has no subprocess_script.{PATCHED_HOOK}: "
            "ssl_lightning.distributed must be updated for this Lightning version"
        )
    setattr(subprocess_script, PATCHED_HOOK, job_subprocess_cmd)


@contextmanager
def ddp_job_scope(expected: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Run one job: children start with the job's command; afterwards the group is gone.

    An exception other than the `expected` ones (which the caller reports) raised while the
    process group spans several processes exits the process with status 1, past Hydra's
    per-job error handling, so a sweep fails fast instead of hanging in its next job.
    """
    use_job_command()
    saved = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    except expected:
        raise
    except Exception:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            traceback.print_exc()
            raise SystemExit(1) from None
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
