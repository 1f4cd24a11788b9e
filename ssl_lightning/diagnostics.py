"""Representation diagnostics as pure functions: kNN accuracy, collapse, effective rank, shortcuts.

A falling SSL loss does not prove the features are useful: the weighted kNN classifier checks that
they carry the labels, the normalised std and effective rank catch (dimensional) collapse, and the
ridge R² of a count shows when the features merely encode the number of hits (a shortcut seen
with count-preserving jet augmentations). No state, no config: callers pass tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KNN_QUERY_CHUNK = 1024  # queries per similarity block: bounds memory at chunk x bank floats


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    query_feats: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> Tensor:
    """Class scores [Q, num_classes] of a weighted kNN vote (Wu et al. 2018, as in DINO).

    Cosine similarity s to the bank; each of the k nearest neighbours votes for its class with
    weight exp(s / temperature); the votes are normalised to sum to 1, so column 1 is a usable
    score for a ROC curve. k is capped at the bank size.
    """
    bank = F.normalize(train_feats.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for query in F.normalize(query_feats.float(), dim=1).split(KNN_QUERY_CHUNK):
        sims, neighbours = (query @ bank.T).topk(k, dim=1)
        # shifting by the largest similarity leaves the normalised votes unchanged and keeps
        # exp() finite for small temperatures
        weights = ((sims - sims[:, :1]) / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes, device=query.device)
        votes.scatter_add_(1, train_labels[neighbours], weights)
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores)


def normalised_std(z: Tensor) -> Tensor:
    """Per-dimension std [d] of L2-normalised embeddings (SimSiam's collapse check).

    Healthy embeddings spread over the sphere give ~1/sqrt(d) in every dimension; a collapsed
    representation (all embeddings equal) gives 0.
    """
    return F.normalize(z.float(), dim=1).std(dim=0)


def std_ratio(z: Tensor) -> Tensor:
    """Mean normalised std x sqrt(d): ~1 healthy, -> 0 collapsed, comparable across widths."""
    return normalised_std(z).mean() * z.shape[1] ** 0.5


def effective_rank(z: Tensor) -> Tensor:
    """exp(entropy) of the normalised eigenvalue spectrum of the covariance (Roy & Vetterli 2007).

    Counts how many directions the embeddings really use: ~d for isotropic data, ~1 when they lie
    on a line; a representation can keep a healthy std while collapsing to few dimensions, which
    only this catches. 0 when the embeddings do not vary at all.
    """
    centred = z.float() - z.float().mean(dim=0)
    cov = centred.T @ centred / max(z.shape[0] - 1, 1)
    eigenvalues = torch.linalg.eigvalsh(cov.double().cpu()).clamp_min(0)
    total = eigenvalues.sum()
    if total == 0:
        return torch.zeros((), dtype=torch.float64)
    p = eigenvalues[eigenvalues > 0] / total
    return torch.exp(-(p * p.log()).sum())


def ridge_r2(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, alpha: float
) -> float:
    """Test R² of a closed-form ridge regression of y on x, fit on the train side only.

    Features are standardised with the train statistics first, so `alpha` means the same for
    backbones whose raw feature scales differ (the E2E net has no normalisation); the intercept
    is not penalised. R² = 1 - SS_res / SS_tot with the test mean: 1 perfect, ~0 or below for
    features that carry nothing about y.
    """
    x = train_x.double()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-8)
    x = (x - mean) / std
    y = train_y.double()
    y_mean = y.mean()
    gram = x.T @ x + alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    weights = torch.linalg.solve(gram, x.T @ (y - y_mean))
    predicted = ((test_x.double() - mean) / std) @ weights + y_mean
    target = test_y.double()
    residual = ((target - predicted) ** 2).sum()
    spread = ((target - target.mean()) ** 2).sum()
    return float(1 - residual / spread)
