"""Save a checkpoint when the job is told to stop (SIGTERM, SIGUSR1), so a requeue resumes.

Lightning notices SIGTERM itself (and broadcasts it to all ranks) and stops with
SIGTERMException after the current batch; this callback writes `last.ckpt` just before that.
SIGUSR1 (what SLURM sends ahead of the time limit with `--signal=USR1@90`) is treated the same,
unless Lightning's SLURM auto-requeue already handles it.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnSignal(Callback):
    """On SIGTERM or SIGUSR1: write `<dirpath>/last.ckpt` after the current batch, then stop."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.usr1 = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        usr1_taken = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if threading.current_thread() is threading.main_thread() and not usr1_taken:
            signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, signum: int, frame: object) -> None:
        self.usr1 = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.received_sigterm or self.usr1:
            trainer.save_checkpoint(self.path)
            if self.usr1:
                raise SIGTERMException
