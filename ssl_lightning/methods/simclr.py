"""SimCLR (Chen et al. 2020): NT-Xent contrastive loss between two views."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ssl_lightning.losses import nt_xent_loss
from ssl_lightning.methods.ssl_method import SSLMethod


class SimCLR(SSLMethod):
    """Pulls the two views of a sample together against all other samples in the global batch."""

    def __init__(self, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def ssl_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature)
