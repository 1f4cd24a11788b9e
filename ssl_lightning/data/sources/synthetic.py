"""Seeded Gaussian blobs whose position and width depend on the class: instant test data.

The class decides where the blob sits and roughly how wide it is, so a probe on any reasonable
representation can classify it; per-sample jitter in width and amplitude gives the regression
targets ("size", "intensity") something continuous to learn.
"""

from __future__ import annotations

import numpy as np

from ssl_lightning.data.sources.base import ImageSource, stable_hash
from ssl_lightning.errors import UserError

NOISE_LEVEL = 0.05  # uniform [0, NOISE_LEVEL) background, so values stay >= 0


class SyntheticSource(ImageSource):
    """Deterministic in-memory blob images: same seed and settings, same bytes."""

    def __init__(
        self, num_samples: int, image_size: int, channels: int, num_classes: int, seed: int
    ) -> None:
        for field, value, minimum in (
            ("num_samples", num_samples, 1),
            ("image_size", image_size, 4),
            ("channels", channels, 1),
            ("num_classes", num_classes, 1),
        ):
            if value < minimum:
                raise UserError(
                    f"synthetic dataset.source.{field}={value} is too small: set it to >= {minimum}"
                )
        self.num_samples = num_samples
        self.image_size = image_size
        self.num_channels = channels
        self.num_classes = num_classes
        self.seed = seed
        self._images, self._labels, self._targets = self._generate()

    def _generate(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        n, k, s = self.num_samples, self.num_classes, self.image_size
        rng = np.random.default_rng(self.seed)
        labels = rng.permutation(np.arange(n) % k).astype(np.int64)  # balanced to within one
        angle = 2 * np.pi * labels / k
        centre_y = s / 2 + 0.25 * s * np.sin(angle) + rng.uniform(-1, 1, n)
        centre_x = s / 2 + 0.25 * s * np.cos(angle) + rng.uniform(-1, 1, n)
        width = s * (0.06 + 0.06 * labels / max(k - 1, 1)) * rng.uniform(0.8, 1.2, n)
        amplitude = rng.uniform(0.5, 1.0, n)
        grid = np.arange(s, dtype=np.float64)
        dist2 = (grid[None, :, None] - centre_y[:, None, None]) ** 2 + (
            grid[None, None, :] - centre_x[:, None, None]
        ) ** 2
        blob = amplitude[:, None, None] * np.exp(-dist2 / (2 * width[:, None, None] ** 2))
        gain = np.linspace(1.0, 0.5, self.num_channels)  # channels differ but share the structure
        noise = rng.uniform(0, NOISE_LEVEL, (n, self.num_channels, s, s))
        images = (blob[:, None] * gain[None, :, None, None] + noise).astype(np.float32)
        targets = {
            "size": width.astype(np.float32),
            "intensity": images.sum(axis=(1, 2, 3), dtype=np.float64).astype(np.float32),
        }
        return images, labels, targets

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.num_channels, self.image_size, self.image_size

    def __len__(self) -> int:
        return self.num_samples

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._images[indices]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return self._targets

    def fingerprint(self) -> str:
        return stable_hash(
            "synthetic",
            self.num_samples,
            self.image_size,
            self.num_channels,
            self.num_classes,
            self.seed,
        )
