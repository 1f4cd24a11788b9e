"""Pixel preprocessing: E2E-style zero-suppression, then per-channel scaling (and clipping).

Zero-suppression acts on the raw image before the views are made (it removes readout noise);
scaling acts on every view and on the clean image after augmentation, so physics-aware
augmentations see pixel values in GeV. Statistics come from the training split only, streamed
batch by batch, so their memory does not grow with the sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.errors import UserError

SCALINGS = ("standard", "hits", "fixed", "none")


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
        return self.scaling in ("standard", "hits")

    def fit(self, images: Tensor | Iterable[Tensor]) -> None:
        """Per-channel statistics of (zero-suppressed) training images, given as one batch or
        as batches one at a time: `standard` takes the mean and std of all pixels, `hits` no
        offset (zeros stay zero) and the mean |value| of the non-zero pixels.

        On sparse channels (ten-odd tracks in 125 x 125 pixels) the std of all pixels is
        ~sqrt(occupancy) x a hit's size, so standard-scaled hits land at ~1/sqrt(occupancy)
        (30-ish) and a clip at 20 flattens most of them; divided by the mean hit, a typical
        hit is ~1 whatever the occupancy (the mean, not the RMS: deposits spanning decades
        would let their tail set an RMS that shrinks typical hits to ~0).
        """
        moments = ChannelMoments()
        for batch in [images] if isinstance(images, Tensor) else images:
            moments.add(self.suppress(batch))
        if self.scaling == "standard":
            self.offset = moments.mean.float().view(1, -1, 1, 1)
            spread = moments.std
        else:
            self.offset = torch.zeros(1, len(moments.mean), 1, 1)
            spread = moments.hit_mean
        self.divisor = spread.clamp_min(1e-8).float().view(1, -1, 1, 1)

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


class ChannelMoments:
    """Per-channel pixel count, mean, sum of squared deviations (M2), non-zero count and sum of
    |value| over [N, C, H, W] batches, merged batch by batch (Chan et al.'s pairwise update, in
    float64): the numbers of all the images at once, in the memory of one batch."""

    def __init__(self) -> None:
        self.count = 0
        # scalars until the first batch broadcasts them to one value per channel
        self.mean = self.m2 = self.hits = self.abs_sum = torch.zeros((), dtype=torch.float64)

    def add(self, batch: Tensor) -> None:
        x = batch.double()
        count = x.numel() // x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        m2 = (x - mean.view(1, -1, 1, 1)).square_().sum(dim=(0, 2, 3))
        hits = x.count_nonzero(dim=(0, 2, 3)).double()
        abs_sum = x.abs().sum(dim=(0, 2, 3))
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.hits = self.hits + hits
        self.abs_sum = self.abs_sum + abs_sum
        self.count = total

    @property
    def std(self) -> Tensor:
        """Unbiased (n - 1), as torch.std."""
        return (self.m2 / max(self.count - 1, 1)).sqrt()

    @property
    def hit_mean(self) -> Tensor:
        """Mean |value| of the non-zero pixels."""
        return self.abs_sum / self.hits.clamp_min(1)


@cache
def _largest_below(cut: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` below `cut`, worked out once per cut and dtype (on the host:
    per batch it would cost two host tensors and a read)."""
    below = torch.nextafter(torch.tensor(cut, dtype=dtype), torch.tensor(-math.inf, dtype=dtype))
    return below.item()
