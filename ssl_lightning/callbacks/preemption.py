"""Preemption: on SIGTERM or SIGUSR1 every rank stops at the same step, with one saved checkpoint.

SLURM signals every task of a job; a user or a scheduler may signal rank 0 alone. Lightning 2.x's
own handling ran a broadcast inside the signal handler, so ranks signalled at different moments
met different collectives (under DDP one stop in three hung until SLURM's kill), a signal to a
rank other than 0 was lost, and it broadcast rank 0's flag with `.item()` every step, a
device sync per GPU step. Here a signal handler only records the signal. At the end of each
training step the ranks combine their records with an all-reduce on a CPU (gloo) group, started
one step and read the next, so the check waits on neither the device nor the network. When the
combined record says stop, every rank is at the same step: Lightning finishes it and raises
SIGTERMException on all ranks, and all save `last.ckpt` (the mid-epoch loop state, the stepped LR
schedule and the data module's position: a resume continues with the next batch). Before
training starts (data preparation, DDP start-up) a signal ends the process at once, with nothing
trained to save, and is passed on to the DDP ranks this process started, or, in such a rank, to
the process that started it: no rank is left waiting for one that is gone. SIGUSR1, which
SLURM sends ahead of the time limit (`--signal=USR1@120`), also requeues the job
(`scontrol requeue`) until it has been requeued `max_requeues` times.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

import lightning as L
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_lightning.collectives import is_distributed
from ssl_lightning.distributed import DDP_CHILD_JOB

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LIGHTNING_STEP_BROADCAST = "_broadcast_sigterm_tensor"  # the per-step broadcast replaced here


def stop_before_training() -> None:
    """Until the trainer installs its `SignalRecord`: a stop signal ends this process at once. A
    DDP rank that Lightning started from this job's rank 0 also ends with its parent (the
    kernel's parent-death signal) and passes a signal it receives on to it."""
    ddp_child = HydraConfig.initialized() and HydraConfig.get().job.name.startswith(DDP_CHILD_JOB)
    for signum in STOP_SIGNALS:
        signal.signal(signum, functools.partial(_stop_now, to_parent=ddp_child))
    if ddp_child:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_now(signum: int, frame: FrameType | None, to_parent: bool) -> None:
    for stop in STOP_SIGNALS:  # once: the signal passed on may come back
        signal.signal(stop, signal.SIG_IGN)
    relatives = ddp_children(os.getpid()) + ([os.getppid()] if to_parent else [])
    for pid in relatives:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    raise SIGTERMException


def ddp_children(pid: int) -> list[int]:
    """The DDP ranks Lightning started from process `pid` (Linux's /proc), not its other children
    such as the W&B service, which the run still needs to close its W&B run."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                if f"hydra.job.name={DDP_CHILD_JOB}".encode() in command:
                    found.append(int(child))
    return found


class SignalRecord:
    """Takes the place of Lightning's signal connector (`trainer._signal_connector`): its
    handlers record which stop signals arrived and do nothing else."""

    def __init__(self) -> None:
        self.arrived: set[int] = set()
        self.received_sigterm = False  # Lightning's loops read it; set once the ranks agreed
        self._previous: dict[int, object] = {}

    def register_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.arrived.add(signum)

    def teardown(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class Preemption(Callback):
    """Stop all ranks at one step on SIGTERM/SIGUSR1, saving `<checkpoint_dir>/last.ckpt`."""

    def __init__(self, checkpoint_dir: Path, max_requeues: int) -> None:
        self.path = Path(checkpoint_dir) / "last.ckpt"
        self.max_requeues = max_requeues
        self.record = SignalRecord()
        self.stopping_for: set[int] = set()  # the agreed signals, once the ranks agreed to stop
        self._group: dist.ProcessGroup | None = None
        self._pending: dist.Work | None = None
        self._votes = torch.zeros(len(STOP_SIGNALS), dtype=torch.int32)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer._signal_connector = self.record
        epoch_loop = trainer.fit_loop.epoch_loop
        if not callable(getattr(epoch_loop, LIGHTNING_STEP_BROADCAST, None)):
            raise RuntimeError(
                f"this Lightning has no {type(epoch_loop).__name__}.{LIGHTNING_STEP_BROADCAST}: "
                "ssl_lightning.callbacks.preemption must be updated for it"
            )
        setattr(epoch_loop, LIGHTNING_STEP_BROADCAST, lambda: None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if is_distributed() and self._group is None:
            self._group = dist.new_group(backend="gloo")  # CPU votes: no device sync

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.stopping_for = self._agreed_signals()
        if self.stopping_for:  # Lightning finishes this step (LR schedule included), then raises
            self.record.received_sigterm = True  # SIGTERMException on every rank

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Save where the step left off: the checkpoint then holds the stepped LR schedule, which
        a save from `on_train_batch_end` would miss (the scheduler steps after that hook)."""
        if not (isinstance(exception, SIGTERMException) and self.stopping_for):
            return
        trainer.save_checkpoint(self.path)
        if signal.SIGUSR1 in self.stopping_for and trainer.is_global_zero:
            print(requeue_slurm_job(self.max_requeues), file=sys.stderr)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:  # no vote may outlive the loop that reads it
            self._pending.wait()
            self._pending = None

    def _agreed_signals(self) -> set[int]:
        """The stop signals any rank has recorded, the same set on every rank. Under DDP the
        ranks vote with an asynchronous all-reduce and read the previous step's result."""
        if self._group is None:
            return set(self.record.arrived)
        agreed: set[int] = set()
        if self._pending is not None:
            self._pending.wait()
            agreed = {
                sig for sig, vote in zip(STOP_SIGNALS, self._votes.tolist(), strict=True) if vote
            }
        if agreed:
            self._pending = None
            return agreed
        self._votes = torch.tensor([int(sig in self.record.arrived) for sig in STOP_SIGNALS])
        self._pending = dist.all_reduce(
            self._votes, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return agreed


def requeue_slurm_job(max_requeues: int) -> str:
    """Requeue this SLURM job unless it was requeued `max_requeues` times already (SLURM counts
    restarts in SLURM_RESTART_COUNT); returns what happened, for the log."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return "SIGUSR1 outside SLURM: not requeued"
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= max_requeues:
        return (
            f"SLURM job {job} not requeued: it restarted {restarts} times, "
            f"preemption.max_requeues={max_requeues}"
        )
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"scontrol requeue {job} failed: {done.stderr.strip()}"
    return f"SLURM job {job} requeued ({restarts + 1} of preemption.max_requeues={max_requeues})"
