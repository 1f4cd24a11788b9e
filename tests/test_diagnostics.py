"""Representation diagnostics: the pure functions on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_lightning.diagnostics import (
    effective_rank,
    knn_predict,
    normalised_std,
    ridge_r2,
    std_ratio,
)


def clusters(n_per_class: int, num_classes: int, dim: int, seed: int):
    """Tight clusters around orthogonal directions: classes are trivially separable."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    centres = torch.eye(dim)[:num_classes] * 10
    feats = centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=gen)
    return feats, labels


def naive_knn(bank, labels, queries, k, temperature, num_classes):
    """One query at a time, straight from the definition."""
    out = []
    for q in queries:
        sims = [float(q @ b / (q.norm() * b.norm())) for b in bank]
        top = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in top:
            votes[int(labels[i])] += math.exp(sims[i] / temperature)
        out.append([v / sum(votes) for v in votes])
    return torch.tensor(out)


def test_knn_is_perfect_on_separated_clusters():
    bank, bank_labels = clusters(50, 3, 8, seed=0)
    queries, query_labels = clusters(20, 3, 8, seed=1)
    scores = knn_predict(bank, bank_labels, queries, 20, 0.07, 3)
    assert scores.shape == (60, 3)
    assert torch.equal(scores.argmax(dim=1), query_labels)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(60))


def test_knn_matches_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(30, 5, generator=gen), torch.randn(7, 5, generator=gen)
    labels = torch.randint(0, 3, (30,), generator=gen)
    for k, temperature in ((1, 0.07), (5, 0.5), (12, 0.1)):
        expected = naive_knn(bank, labels, queries, k, temperature, 3)
        got = knn_predict(bank, labels, queries, k, temperature, 3)
        torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-4)


def test_knn_k_and_temperature_act_as_defined():
    # query at angle 0; one class-0 point at 10 degrees, three class-1 points at 30-40 degrees
    angles = torch.tensor([10.0, 30.0, 35.0, 40.0]).deg2rad()
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    # k=1: the nearest neighbour alone decides
    assert knn_predict(bank, labels, query, 1, 0.07, 2).tolist() == [[1.0, 0.0]]
    # large k is capped at the bank; a hot temperature -> equal weights -> class fractions
    hot = knn_predict(bank, labels, query, 100, 1e4, 2)
    torch.testing.assert_close(hot, torch.tensor([[0.25, 0.75]]), atol=1e-3, rtol=0)
    # a cold temperature makes the nearest neighbour dominate again, even with k=4
    cold = knn_predict(bank, labels, query, 4, 0.001, 2)
    assert cold[0, 0] > 0.99
    # in between, lowering T moves the vote towards the nearer class monotonically
    warm = [float(knn_predict(bank, labels, query, 4, t, 2)[0, 0]) for t in (1.0, 0.1, 0.03)]
    assert warm == sorted(warm)


def test_effective_rank_counts_the_used_dimensions():
    gen = torch.Generator().manual_seed(0)
    isotropic = torch.randn(20_000, 16, generator=gen)
    assert float(effective_rank(isotropic)) == pytest.approx(16, rel=0.01)
    line = torch.randn(1000, 1, generator=gen) * torch.randn(1, 16, generator=gen)
    assert float(effective_rank(line)) == pytest.approx(1, abs=1e-3)
    # two equal directions and nothing else: exactly 2
    plane = torch.randn(5000, 2, generator=gen) @ torch.eye(16)[:2]
    assert float(effective_rank(plane)) == pytest.approx(2, rel=0.01)
    assert float(effective_rank(torch.ones(100, 16))) == 0


def test_normalised_std_separates_collapse_from_spread():
    collapsed = torch.ones(256, 32) * torch.randn(1, 32)
    assert float(normalised_std(collapsed).max()) == pytest.approx(0, abs=1e-6)
    assert float(std_ratio(collapsed)) == pytest.approx(0, abs=1e-5)
    isotropic = torch.randn(20_000, 32, generator=torch.Generator().manual_seed(0))
    per_dim = normalised_std(isotropic)
    assert per_dim.shape == (32,)
    torch.testing.assert_close(per_dim, torch.full((32,), 32**-0.5), atol=5e-3, rtol=0)
    assert float(std_ratio(isotropic)) == pytest.approx(1, abs=0.01)


def test_ridge_r2_is_one_for_a_linear_relation_and_zero_for_noise():
    gen = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(2000, 10, generator=gen), torch.randn(500, 10, generator=gen)
    w = torch.randn(10, generator=gen)
    assert ridge_r2(x_train, x_train @ w + 3, x_test, x_test @ w + 3, 1e-6) == pytest.approx(
        1, abs=1e-6
    )
    noise_train, noise_test = torch.randn(2000, generator=gen), torch.randn(500, generator=gen)
    assert abs(ridge_r2(x_train, noise_train, x_test, noise_test, 1.0)) <= 0.1


def test_ridge_r2_does_not_depend_on_feature_scale():
    gen = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(300, 4, generator=gen), torch.randn(100, 4, generator=gen)
    y_train = x_train[:, 0] + 0.5 * torch.randn(300, generator=gen)
    y_test = x_test[:, 0] + 0.5 * torch.randn(100, generator=gen)
    scale = torch.tensor([1e3, 1e-3, 1.0, 50.0])
    plain = ridge_r2(x_train, y_train, x_test, y_test, 10.0)
    scaled = ridge_r2(x_train * scale, y_train, x_test * scale, y_test, 10.0)
    assert scaled == pytest.approx(plain, abs=1e-6)
