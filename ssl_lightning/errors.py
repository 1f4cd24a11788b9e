"""Bad input, reported in one line.

`ssl-train` and the other console scripts print a `UserError` as a single line (problem and fix)
and exit with status 2 instead of showing a traceback. A file that cannot be written (a full
disk, a read-only or missing folder) is bad input too: the fix is another folder or free space.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# OSError numbers that mean "this place cannot be written", not a bug
UNWRITABLE = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EEXIST,
    }
)
RUN_LOG = "ssl_lightning.run_log"  # logs to the run's log file alone (conf/hydra/job_logging)


class UserError(Exception):
    """Bad input (missing file, wrong key, mismatched channels, ...); the message says the fix."""


@contextmanager
def writing(
    path: Path | None, fix: str = "free space on that disk or choose a folder you can write to"
) -> Iterator[None]:
    """An OSError of the block that says `path` (None: the file the error names) cannot be
    written becomes a one-line UserError ending in `fix`; any other stays a bug, shown with its
    traceback."""
    try:
        yield
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise UserError(f"cannot write {path or err.filename} ({err.strerror}): {fix}") from err


def error_line(message: str) -> str:
    """`message` as the one `error:` line a console script prints."""
    return "error: " + " ".join(message.split())


def report(message: str) -> None:
    """Print `message` as one `error:` line on stderr, and keep it in the run's log file."""
    line = error_line(message)
    print(line, file=sys.stderr)
    run_log = logging.getLogger(RUN_LOG)
    if run_log.handlers:  # outside a Hydra job no file takes it (and Python would print it again)
        run_log.error(line)
