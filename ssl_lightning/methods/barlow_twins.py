"""Barlow Twins (Zbontar et al. 2021): make the views' cross-correlation matrix the identity."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ssl_lightning.losses import barlow_twins_loss
from ssl_lightning.methods.ssl_method import SSLMethod


class BarlowTwins(SSLMethod):
    """Invariance on the diagonal, redundancy reduction (weighted by `lambd`) off it."""

    def __init__(self, lambd: float, scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lambd, self.scale = lambd, scale

    def ssl_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambd, self.scale)
