"""Pixel preprocessing: E2E-style zero-suppression, then per-channel scaling (and clipping).

Zero-suppression acts on the raw image before the views are made (it removes readout noise);
scaling acts on every view and on the clean image after augmentation, so physics-aware
augmentations see pixel values in GeV. Statistics come from the training split only.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.errors import UserError

SCALINGS = ("standard", "fixed", "none")


class Preprocess:
    """`suppress(raw)` before augmentation, `scale(x)` after it."""

    def __init__(
        self,
        zero_suppress: float,
        scaling: str,
        channel_scales: list[float] | None,
        clip: float | None,
        channels: int,
    ) -> None:
        if scaling not in SCALINGS:
            raise UserError(
                f"dataset.preprocess.scaling={scaling!r}: use one of {', '.join(SCALINGS)}"
            )
        if scaling == "fixed" and (channel_scales is None or len(channel_scales) != channels):
            raise UserError(
                f"dataset.preprocess.scaling=fixed needs dataset.preprocess.channel_scales with "
                f"one positive number per channel ({channels})"
            )
        self.zero_suppress = zero_suppress
        self.scaling = scaling
        self.clip = clip
        self.offset = torch.zeros(1, channels, 1, 1)
        scales = channel_scales if scaling == "fixed" else [1.0] * channels
        self.divisor = torch.tensor(scales, dtype=torch.float32).view(1, channels, 1, 1)

    @property
    def needs_statistics(self) -> bool:
        return self.scaling == "standard"

    def fit(self, images: Tensor) -> None:
        """Per-channel mean/std of (zero-suppressed) training images, for `standard` scaling."""
        images = self.suppress(images).double()
        self.offset = images.mean(dim=(0, 2, 3)).float().view(1, -1, 1, 1)
        self.divisor = images.std(dim=(0, 2, 3)).clamp_min(1e-8).float().view(1, -1, 1, 1)

    def suppress(self, x: Tensor) -> Tensor:
        """Zeroes pixels below `zero_suppress` (images are floating point)."""
        if self.zero_suppress <= 0:
            return x
        # F.threshold zeroes x <= t in one pass (torch.where needs a mask and a zeros tensor:
        # ~10x slower on a channels-last batch); t = the largest value of x's dtype below the
        # cut, so exactly the pixels x < zero_suppress go, as the cut is defined
        return F.threshold(x, _largest_below(self.zero_suppress, x.dtype), 0.0)

    def scale(self, x: Tensor) -> Tensor:
        if self.scaling == "none":
            return x
        if self.offset.device != x.device:  # once, not a blocking host-to-GPU copy every batch
            self.offset, self.divisor = self.offset.to(x.device), self.divisor.to(x.device)
        out = torch.sub(x, self.offset).div_(self.divisor)
        return out.clamp_(-self.clip, self.clip) if self.clip else out


@cache
def _largest_below(cut: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` below `cut`, worked out once per cut and dtype (on the host:
    per batch it would cost two host tensors and a read)."""
    below = torch.nextafter(torch.tensor(cut, dtype=dtype), torch.tensor(-math.inf, dtype=dtype))
    return below.item()
