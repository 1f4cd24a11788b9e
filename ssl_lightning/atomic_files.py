"""Files replaced atomically: a reader (another rank, a resumed job) sees the old file or the new
one, never part of one, and a crash or a full disk leaves no half-written target or temp file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same file system; named per process and call, so writers
    at once never share one, nor meet a stale file of a crashed process with a reused pid) to
    write to; renamed over `path` when the block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)
