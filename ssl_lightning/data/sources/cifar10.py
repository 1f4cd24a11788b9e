"""CIFAR-10 from the official "python version" pickles, pooled into one 60,000-image set.

The five training batches come first, then the test batch; the data module draws its own
train/val/test split by `split_seed`. Images stay uint8 in memory (180 MB) and are scaled per batch.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ssl_lightning.data.sources.base import ImageSource, file_identity, stable_hash
from ssl_lightning.errors import UserError

FOLDER = "cifar-10-batches-py"
BATCH_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
SHAPE = (3, 32, 32)  # each 3072-byte row is the R, G and B planes, each 32x32 row-major


class CIFAR10Source(ImageSource):
    """All 60,000 CIFAR-10 images with their 10 class labels; no regression targets."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        folder = self.root / FOLDER
        missing = [name for name in BATCH_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(
                f"CIFAR-10 not found: expected {folder}/data_batch_1..5 and test_batch (missing: "
                f"{', '.join(missing)}); download cifar-10-python.tar.gz "
                f"(https://www.cs.toronto.edu/~kriz/cifar.html) and extract it into {self.root} "
                "— this machine cannot download"
            )
        self._files = [folder / name for name in BATCH_FILES]
        images, labels = zip(*(_load_batch(path) for path in self._files), strict=True)
        self._images = np.concatenate(images)
        self._labels = np.concatenate(labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return SHAPE

    def __len__(self) -> int:
        return len(self._labels)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._images[indices].astype(np.float32) / np.float32(255)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return {}

    def fingerprint(self) -> str:
        return stable_hash("cifar10", *(file_identity(path) for path in self._files))


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 3, 32, 32] images and int64 [n] labels from one pickled batch."""
    fix = f"re-extract cifar-10-python.tar.gz into {path.parent.parent}"
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, TypeError, KeyError, ValueError) as err:
        raise UserError(
            f"CIFAR-10 batch {path} is not a python-version batch with b'data' and b'labels' "
            f"({type(err).__name__}: {err}); {fix}"
        ) from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != np.prod(SHAPE):
        raise UserError(
            f"CIFAR-10 batch {path} holds data of shape {data.shape} and dtype {data.dtype}, "
            f"expected uint8 [n, 3072]; {fix}"
        )
    if len(labels) != len(data) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise UserError(
            f"CIFAR-10 batch {path} has {len(labels)} labels for {len(data)} images or labels "
            f"outside 0..9; {fix}"
        )
    return data.reshape(-1, *SHAPE), labels
