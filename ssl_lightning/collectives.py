"""Autograd-aware collectives shared by the losses and the global BatchNorm.

Written on the public `torch.distributed` API: `torch.distributed.nn.functional` is deprecated
(FutureWarning on every call) in recent torch, and its all_reduce passed no gradient in torch 2.4.
Outside a multi-process group every helper is the identity, so the same code runs on one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_and_rank() -> tuple[int, int]:
    """(world size, rank), or (1, 0) outside a multi-process group."""
    return (dist.get_world_size(), dist.get_rank()) if is_distributed() else (1, 0)


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's [n, d] tensor along dim 0, in rank order, keeping the graph.

    Backward: rank r's input received gradient from its slice of the gathered tensor on *every*
    rank, so the gradient is the sum over ranks of that slice. We all-reduce the full gradient
    and slice it (a reduce-scatter would move less data, but not every backend has one and
    embeddings are small). Written on the public `dist` API because
    `torch.distributed.nn.functional` is deprecated (FutureWarning on every call) in recent torch.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) that keeps the graph: d(sum)/d(input_r) = 1 for every rank's output,
    so the backward is again a sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def gather_rows(x: Tensor) -> Tensor:
    """Every rank's rows concatenated in rank order, gradients flowing back to their owners."""
    return _GatherRows.apply(x) if is_distributed() else x


def sum_over_ranks(x: Tensor) -> Tensor:
    """The sum of `x` over ranks, on every rank, with gradients summed back over ranks."""
    return _SumOverRanks.apply(x) if is_distributed() else x
