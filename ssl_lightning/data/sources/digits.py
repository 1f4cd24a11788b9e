"""scikit-learn's 8x8 handwritten digits, upsampled: a real data set that works offline.

The 1,797 images ship inside scikit-learn, so smoke runs and tests need no download. They are
upsampled so the CIFAR-sized backbones and augmentations apply unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from ssl_lightning.data.sources.base import ImageSource, stable_hash
from ssl_lightning.errors import UserError

MAX_VALUE = 16.0  # the digits' pixel values are counts 0..16


class DigitsSource(ImageSource):
    """All digits in memory as float32 [1797, channels, image_size, image_size] in [0, 1]."""

    def __init__(self, image_size: int, channels: int) -> None:
        if image_size < 1:
            raise UserError(f"dataset.source.image_size={image_size} must be >= 1, e.g. 32")
        if channels < 1:
            raise UserError(f"dataset.channels={channels} must be >= 1 (1 or 3 for digits)")
        self.image_size = image_size
        self.num_channels = channels
        digits = load_digits()
        small = digits.images.astype(np.float32) / np.float32(MAX_VALUE)  # [N, 8, 8]
        large = F.interpolate(
            torch.from_numpy(small)[:, None],
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
        )
        self._images = large.expand(-1, channels, -1, -1).contiguous().numpy()
        self._labels = digits.target.astype(np.int64)
        self._targets = {"ink": small.sum(axis=(1, 2), dtype=np.float64).astype(np.float32)}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.num_channels, self.image_size, self.image_size

    def __len__(self) -> int:
        return len(self._labels)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._images[indices]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return self._targets

    def fingerprint(self) -> str:
        return stable_hash("digits", len(self), self.image_size, self.num_channels)
