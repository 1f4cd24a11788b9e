"""The SSL objectives: NT-Xent (SimCLR) and Barlow Twins, as pure functions of two embeddings.

Both take `z1, z2` of shape [n, d]: row i of each is one augmented view of sample i.

Distributed training: when a `torch.distributed` process group with more than one rank is
initialised, each loss communicates across ranks by itself so that, under
`DistributedDataParallel` (which averages parameter gradients over ranks), the returned value on
every rank and the averaged gradients equal those of one process evaluating the loss on the
concatenated global batch (rank 0's rows first). This assumes every rank calls the loss in
lockstep with the same per-rank batch size n (a `DistributedSampler` plus a `DataLoader`
with `drop_last=True` gives that); unequal sizes would corrupt the gather / hang.

Half-precision inputs are upcast and autocast is disabled inside: both losses sum many
exponentials / squares, which bf16/fp16 resolve too coarsely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.collectives import gather_rows, sum_over_ranks, world_and_rank

__all__ = ["barlow_twins_loss", "nt_xent_loss"]

_BN_EPS = 1e-5  # BatchNorm1d's default, so the standardisation matches the paper's affine-free BN


# --------------------------------------------------------------------------------------------
# Shared input handling
# --------------------------------------------------------------------------------------------
def _check_pair(z1: Tensor, z2: Tensor, name: str) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"{name} expects two [n, d] embeddings of the same shape, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 1:
        raise ValueError(f"{name} got an empty batch")


def _full_precision(z: Tensor) -> Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


# --------------------------------------------------------------------------------------------
# NT-Xent
# --------------------------------------------------------------------------------------------
def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    r"""Normalised-temperature cross-entropy (SimCLR's contrastive loss).

    With the 2N rows u_k = z_k / ||z_k|| of [z1; z2] and p(k) the index of k's other view,

        L = 1/(2N) Σ_k -log( exp(u_k·u_p(k) / τ) / Σ_{j≠k} exp(u_k·u_j / τ) ),

    i.e. each embedding must pick out its partner among the 2N-1 others (its partner included
    in the denominator). Cosine similarity makes the loss depend on direction only, and τ sets
    how hard the negatives are weighted.

    Distributed: the candidates are the 2N embeddings of the global batch (N = world·n), the
    anchors this rank's 2n rows; the gradient flows to other ranks through `gather_rows`. Each
    rank's mean over its anchors is L_r, the global loss L = mean_r L_r, and since the gather's
    backward sums contributions from all ranks, rank r's embeddings receive Σ_s ∂L_s/∂z_r =
    world·∂L/∂z_r; DDP's 1/world average then gives exactly ∂L/∂θ. The returned value is the
    global L (all-reduced, detached), identical on every rank, with L_r's gradient.

    Args:
        z1, z2: [n, d] embeddings of the two views (this rank's rows).
        temperature: τ > 0.

    Returns:
        Scalar loss (float32 for half-precision inputs).
    """
    _check_pair(z1, z2, "nt_xent_loss")
    if temperature <= 0:
        raise ValueError(f"nt_xent_loss needs temperature > 0, got {temperature}")
    world, rank = world_and_rank()
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        u1 = F.normalize(_full_precision(z1), dim=1)
        u2 = F.normalize(_full_precision(z2), dim=1)
        big_n = n * world
        candidates = torch.cat([gather_rows(u1), gather_rows(u2)])  # [2N, d]
        anchors = torch.cat([u1, u2])  # [2n, d]
        logits = anchors @ candidates.T / temperature  # [2n, 2N]

        # Row i < n is view 1 of global sample rank·n + i (global index g), row n + i its view 2
        # (index N + g); each one's positive is the other view and its own column is masked.
        local = torch.arange(n, device=z1.device) + rank * n
        self_idx = torch.cat([local, local + big_n])
        pos_idx = torch.cat([local + big_n, local])
        loss = F.cross_entropy(logits.scatter(1, self_idx[:, None], float("-inf")), pos_idx)

        if world > 1:
            mean = sum_over_ranks(loss.detach()) / world
            loss = mean + (loss - loss.detach())  # value: global mean; gradient: L_r's
    return loss


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------
def _standardise(z: Tensor, big_n: int) -> Tensor:
    """Per-feature (z - mean) / sqrt(biased var + eps) over the global batch of `big_n` rows.

    Two passes (mean, then centred squares) instead of E[z²] - E[z]² to avoid cancellation;
    each pass all-reduces one vector of per-rank, per-feature sums.
    """
    mean = sum_over_ranks(z.sum(dim=0)) / big_n
    centred = z - mean
    var = sum_over_ranks(centred.pow(2).sum(dim=0)) / big_n
    return centred / torch.sqrt(var + _BN_EPS)


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float, scale: float = 1.0) -> Tensor:
    r"""Barlow Twins' redundancy-reduction loss.

    Standardise each feature over the batch, ẑ = (z - mean) / sqrt(var + 1e-5) (biased var, no
    affine, like `BatchNorm1d(affine=False)` in training mode), form the d×d cross-correlation
    C = ẑ1ᵀ ẑ2 / N, and

        L = scale · [ Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij² ].

    The diagonal term makes each feature invariant to the augmentation; the off-diagonal one
    decorrelates features so they do not all encode the same thing. λ balances the d diagonal
    against the d(d-1) off-diagonal terms; `scale` (default 1) only rescales the loss, e.g. to
    keep it comparable across projector widths.

    Distributed: the batch statistics and C are global, built from all-reduced per-rank sums
    (one 2d-vector all-reduce for the means of both views, one for their variances, one d×d
    for C; the embeddings themselves are never sent), so every rank computes the identical
    global L. Because L depends on the embeddings only through these autograd-aware
    all-reduces, whose backward sums the gradient over ranks, each rank's embeddings receive
    world·∂L/∂z_r, and DDP's 1/world average yields exactly ∂L/∂θ. (A plain, non-differentiable
    all-reduce of C would instead leave the gradients world times too small.)

    Args:
        z1, z2: [n, d] embeddings of the two views (this rank's rows).
        lambd: λ, weight of the off-diagonal (redundancy) term.
        scale: overall multiplier of the loss. Default 1.

    Returns:
        Scalar loss (float32 for half-precision inputs).
    """
    _check_pair(z1, z2, "barlow_twins_loss")
    world, _ = world_and_rank()
    n, d = z1.shape
    big_n = n * world
    with torch.autocast(device_type=z1.device.type, enabled=False):
        # Features are standardised independently, so both views share one pair of all-reduces.
        both = _standardise(torch.cat([_full_precision(z1), _full_precision(z2)], dim=1), big_n)
        s1, s2 = both[:, :d], both[:, d:]
        c = sum_over_ranks(s1.T @ s2) / big_n
        diag = torch.diagonal(c)
        on_diag = (1 - diag).pow(2).sum()
        # Zeroing the diagonal of C² in place (not Σ C² - Σ diag²) avoids cancelling ~d against
        # ~d late in training and allocates no d×d mask.
        off_diag = c.pow(2).fill_diagonal_(0).sum()
        return scale * (on_diag + lambd * off_diag)
