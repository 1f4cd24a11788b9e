"""BatchNorm with statistics over the global batch of all ranks, on any device and backend.

torch's SyncBatchNorm refuses CPU modules, but exact DDP (2 gloo processes on CPU equal to one
process on the concatenated batch) needs the global statistics. This layer computes them with
autograd-aware all-reduces (two passes: mean, then biased variance, accumulated in float64) and
behaves like BatchNorm outside a multi-process group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_lightning.collectives import is_distributed, sum_over_ranks


class GlobalBatchNorm(_BatchNorm):
    """Drop-in for BatchNorm1d/2d whose training statistics span every rank's samples."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"GlobalBatchNorm expects [N, C, ...] input, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.ndim)]
        # float64 statistics, as torch's CPU BatchNorm accumulates: a feature with a large mean
        # and a small spread loses its variance to float32 rounding otherwise.
        wide = x.double()
        # a fill on the device: torch.tensor(number, device=...) would copy from the host
        count = sum_over_ranks(torch.full((), float(x.numel() // x.shape[1]), device=x.device))
        mean = sum_over_ranks(wide.sum(dims)) / count
        shape = [1, -1] + [1] * (x.ndim - 2)
        centred = wide - mean.view(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach().to(x.dtype), alpha=m)
                unbiased = var.detach() * count / (count - 1)
                self.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
                self.num_batches_tracked.add_(1)
        out = (centred / torch.sqrt(var.view(shape) + self.eps)).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in `module` (in place) by a GlobalBatchNorm with its state."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            replacement = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_to_global_batchnorm(child)
    return module
