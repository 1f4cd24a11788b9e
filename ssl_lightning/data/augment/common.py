"""Helpers both augmentation pipelines share: argument checks and batch geometry."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_probability(name: str, p: float) -> float:
    """`p` as a float, refused at construction when it is no probability (not mid-training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}={p} must lie in [0, 1]")
    return float(p)


def check_range(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    """A positive [low, high] config list as a float pair, refused when it is empty or <= 0."""
    lo, hi = (float(b) for b in bounds)
    if not 0.0 < lo <= hi:
        raise ValueError(f"{name}={list(bounds)} must be [low, high] with 0 < low <= high")
    return lo, hi


def pixel_centres(size: int, like: Tensor) -> Tensor:
    """Pixel centres along one axis in grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return (2 * torch.arange(size, dtype=like.dtype, device=like.device) + 1) / size - 1


def views_per_sample(x: Tensor, keys: Tensor) -> int:
    """V from keys [V * N] for a batch of N: a wrong key count would silently mix up views."""
    n, k = len(x), len(keys)
    if n == 0 or k % n:
        raise ValueError(f"{k} keys for {n} images: pass one key per view of each image")
    return k // n
