"""The contract between a training module and the data module: what the module needs of the data.

A training module declares its `DataNeeds`; `ssl-train` hands them to the data module when it
builds it, so neither side reads the other through the trainer. The training batch size both use
comes from one config key (`method.batch_size`). A regression target's scaling is the one thing
that needs the split, which exists only once the data module is set up: the module hands over its
`TargetScaling`, and the data module fits it to the labelled training subset in `setup`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


class TargetScaling(nn.Module):
    """Standardises regression targets, each with the labelled training subset's mean and std.

    The statistics are buffers, so a checkpoint keeps them and a restored probe reports its
    predictions in the targets' own units without seeing the data again. One target named as a
    string keeps scalar buffers (checkpoints of single-target probes load as before); a list of
    targets gets one entry per target, broadcast over the last axis of [N, targets] values.
    """

    def __init__(self, targets: str | Sequence[str]) -> None:
        super().__init__()
        self.targets = (targets,) if isinstance(targets, str) else tuple(targets)
        shape = () if isinstance(targets, str) else (len(self.targets),)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def fit(self, values: np.ndarray) -> None:
        """Take the statistics of `values` [n, targets] (float64; std floored so a constant
        target works)."""
        values = values.astype(np.float64)
        self.mean.copy_(torch.from_numpy(values.mean(axis=0)).reshape(self.mean.shape))
        std = np.maximum(values.std(axis=0), 1e-8)
        self.std.copy_(torch.from_numpy(std).reshape(self.std.shape))

    def standardise(self, values: Tensor) -> Tensor:
        return (values - self.mean) / self.std

    def restore(self, standardised: Tensor) -> Tensor:
        return standardised * self.std + self.mean


@dataclass(frozen=True)
class DataNeeds:
    """What a training module needs the data module to emit."""

    views: int  # augmented views per sample, made on the device (0: clean images only)
    labelled: bool  # train and validate on the labelled subset (dataset.label_fraction) only
    target_scaling: TargetScaling | None  # fitted by the data module in setup, if given


NO_NEEDS = DataNeeds(views=0, labelled=False, target_scaling=None)
"""Clean images of whole splits: what reading data outside training (ssl-embed) needs."""
