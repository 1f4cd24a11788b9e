"""Sources that first make an HDF5 file (generate, convert), then read it like any HDF5 file."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssl_lightning.data.sources.base import ImageSource
from ssl_lightning.data.sources.hdf5 import HDF5Source


class PreparedFileSource(ImageSource):
    """`prepare()` writes `self.path` once (rank 0); reads go through an HDF5Source of it."""

    def __init__(
        self,
        path: Path,
        label_key: str | None,
        target_keys: list[str],
        in_memory: bool,
        channel_subset: Sequence[int] | None = None,  # None: every channel
    ) -> None:
        self.path = path
        self.label_key = label_key
        self.target_keys = list(target_keys)
        self.in_memory = in_memory
        self.channel_subset = channel_subset
        self._file: HDF5Source | None = None

    @abstractmethod
    def write(self) -> None:
        """Create `self.path` (atomically: a half-written file must never be found there)."""

    def prepare(self) -> None:
        if not self.path.is_file():
            self.write()

    @property
    def file(self) -> HDF5Source:
        """The prepared file, opened on first use; a rank that skipped prepare_data finds it."""
        if self._file is None:
            self.prepare()
            self._file = HDF5Source(
                str(self.path),
                "X_jets",
                "channels_last",
                self.label_key,
                self.target_keys,
                self.in_memory,
                self.channel_subset,
            )
        return self._file

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.file.image_shape

    def __len__(self) -> int:
        return len(self.file)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.file.read(indices)

    @property
    def labels(self) -> np.ndarray | None:
        return self.file.labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return self.file.targets

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}  # DataLoader workers reopen the file themselves
