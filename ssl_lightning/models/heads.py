"""Projector MLPs for the SSL losses, and the linear head of the probes."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int, last_norm: bool) -> nn.Sequential:
    """`layers` Linear layers with BatchNorm + ReLU between them (SimCLR / Barlow Twins projector).

    Barlow Twins' loss standardises its inputs anyway, so `last_norm` (a final affine-free BN,
    as in SimCLR v2) is left to the config.
    """
    if layers < 1:
        raise ValueError("a projector needs at least one layer")
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    modules.append(nn.Linear(dim, out_dim))
    if last_norm:
        modules.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*modules)


def linear_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """A linear layer behind an affine-free BatchNorm: still a linear map of the features at
    inference, but the unnormalised E2E net's features drift in scale during pretraining (and
    differ by orders of magnitude between checkpoints), which left a plain linear layer trained
    for a few hundred steps near chance (measured: docs/results/probe_head.md).
    """
    return nn.Sequential(nn.BatchNorm1d(in_dim, affine=False), nn.Linear(in_dim, out_dim))
