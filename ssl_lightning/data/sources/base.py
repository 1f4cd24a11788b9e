"""The `ImageSource` interface every data set implements; fingerprints and file lists.

The data module only needs random access by index arrays plus small in-memory label/target
arrays, so a source can be a file on disk read per batch or an array generated in memory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssl_lightning.atomic_files import write_text_atomically
from ssl_lightning.errors import UserError

HASH_BLOCK = 1 << 20  # bytes read per step when hashing a file
CACHED_DIGEST_BYTES = 64 << 20  # smaller files are hashed on each start (< 0.1 s), not cached

_digests: dict[str, str] = {}  # this process's file digests by file version (see file_identity)


class ImageSource(ABC):
    """A labelled/unlabelled image collection read by index."""

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of each image `read` returns."""

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, indices: np.ndarray) -> np.ndarray:
        """float32 [n, C, H, W] in the order of `indices` (any order, repeats allowed), in any
        memory layout without negative strides (the data module lays batches out as the model
        wants them).

        Values are raw physical values (natural images scaled to [0, 1]); normalisation is the
        data module's job so that it can use train-split statistics.
        """

    @property
    @abstractmethod
    def labels(self) -> np.ndarray | None:
        """int64 [N] class ids 0..K-1, or None for unlabelled data."""

    @property
    @abstractmethod
    def targets(self) -> dict[str, np.ndarray]:
        """float32 [N] regression targets by name (may be empty)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Short stable hash of the settings and content identity, so saved splits and logs can
        tell whether they refer to the same data."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook with a no-op default
        """One-time work (generation, conversion); called once on rank 0 before reading."""


def stable_hash(*parts: object) -> str:
    """12 hex digits of SHA-256 over the parts' reprs (stable across processes, unlike hash())."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def file_identity(path: Path) -> tuple[int, str]:
    """(size, SHA-256 of the bytes): the same for a touched, copied or moved file, different
    after any changed byte, so a saved split follows the data, not its time stamp or place.

    Hashing reads the whole file (about 1 GB/s), so the digest of a large file is kept per
    file version in a small per-user cache, keyed by (path, device, inode, size, mtime, ctime):
    a 50 GB file is hashed once, not on every start; `touch` or `cp` make a new version, hashed
    once more (to the same digest). Hashing sampled blocks instead would cost nothing each start
    but miss a change between the samples (a relabelled jet), and resume on the wrong data.
    """
    stat = path.stat()
    key = stable_hash(
        str(path.resolve()),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    )
    if key not in _digests:
        large = stat.st_size >= CACHED_DIGEST_BYTES
        _digests[key] = _cached_digest(path, key) if large else _sha256(path)
    return stat.st_size, _digests[key]


def digest_cache_dir() -> Path:
    """Where file digests are kept: $XDG_CACHE_HOME/ssl-lightning/digests (~/.cache/...), beside
    the default data folder."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ssl-lightning" / "digests"


def _cached_digest(path: Path, key: str) -> str:
    """The file's digest from the cache, or computed and stored there (best effort: a cache
    that cannot be written only means hashing again next time)."""
    entry = digest_cache_dir() / key
    with contextlib.suppress(OSError):
        return entry.read_text()
    digest = _sha256(path)
    with contextlib.suppress(OSError):
        write_text_atomically(entry, digest)
    return digest


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while size := f.readinto(buffer):
            hasher.update(view[:size])
    return hasher.hexdigest()


def resolve_files(path: str | Sequence[str], suffixes: tuple[str, ...], kind: str) -> list[Path]:
    """The files `dataset.source.path` names, sorted by path, each once: one file, a folder
    (its files ending in `suffixes`), a glob, or a list of any of these.

    Sorted, so the concatenated dataset (and its split) does not depend on how the list was
    written or the order the file system lists a folder in.
    """
    entries = list(path) if isinstance(path, Sequence) and not isinstance(path, str) else [path]
    fix = f"set dataset.source.path to {kind} file(s): one file, a list, a glob or a folder"
    if not entries:
        raise UserError(f"dataset.source.path is an empty list: {fix}")
    found: dict[Path, Path] = {}  # resolved -> as given, so a file named twice is read once
    for entry in entries:
        for file in _expand(Path(os.path.expanduser(str(entry))), suffixes, kind, fix):
            found.setdefault(file.resolve(), file)
    return sorted(found.values(), key=str)


def _expand(entry: Path, suffixes: tuple[str, ...], kind: str, fix: str) -> list[Path]:
    if glob.has_magic(str(entry)):
        files = [Path(p) for p in glob.glob(str(entry), recursive=True) if Path(p).is_file()]
        if not files:
            raise UserError(f"dataset.source.path glob {entry} matches no file: {fix}")
        return files
    if entry.is_dir():
        files = [p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
        if not files:
            raise UserError(f"folder {entry} holds no {kind} files ({', '.join(suffixes)}): {fix}")
        return files
    if not entry.is_file():
        raise UserError(f"{kind} file not found: {entry} — {fix}")
    return [entry]
