"""Lightning's DDP launch under Hydra, fixed for multirun.

Lightning starts ranks 1..N-1 by re-running the command line. Under `ssl-train -m ...` that command
is the whole sweep, so every extra rank re-ran every job into its own sweep folder. Children
must instead run exactly the current job: its own overrides, in its own output folder.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from lightning.fabric.strategies.launchers import subprocess_script


def job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that runs this Hydra job (not the sweep) as DDP rank `local_rank`."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "ssl_lightning.train", *hydra_cfg.overrides.task]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name=ddp_rank_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def use_job_command_for_ddp_children() -> None:
    """Make Lightning's subprocess launcher start children with `job_subprocess_cmd`."""
    subprocess_script._hydra_subprocess_cmd = job_subprocess_cmd
