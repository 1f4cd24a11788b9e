"""The `ImageSource` interface every data set implements, and fingerprint helpers.

The data module only needs random access by index arrays plus small in-memory label/target
arrays, so a source can be a file on disk read per batch or an array generated in memory.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


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


def file_identity(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): changes when the file is replaced or rewritten."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns
