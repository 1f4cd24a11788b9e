"""Files replaced atomically: a reader (another rank, a resumed job) sees the old file or the new
one, never part of one, and a crash or a full disk leaves no half-written target or temp file.
And a run folder held by one run at a time, so two runs never mix their checkpoints in it."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_lightning.errors import UserError, writing

RUN_LOCK = ".run.lock"  # in the run folder; holds the pid of the run that holds it


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same file system; named per process and call, so writers
    at once never share one, nor meet a stale file of a crashed process with a reused pid) to
    write to; renamed over `path` when the block succeeds, removed when it fails. A full disk or
    an unwritable folder is a one-line UserError; the previous `path` stays as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


@contextmanager
def run_folder_held(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for the block: a second run into it is refused in one line instead of
    mixing its checkpoints, results.json and W&B run with this one's. An flock, so the kernel
    releases it when the holder ends, however it ends: a stale lock file never blocks."""
    lock = run_dir / RUN_LOCK
    with writing(run_dir, fix="choose another output folder (hydra.run.dir=...)"):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"another run (pid {holder}) is using {run_dir}: wait for it to end, or start "
                "this one in another folder (hydra.run.dir=...)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
