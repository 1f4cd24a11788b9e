"""`ssl_lightning.losses`: naive-loop references, hand-computed cases and DDP exactness."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from ssl_lightning.losses import barlow_twins_loss, nt_xent_loss

# --------------------------------------------------------------------------------------------
# Independent references: plain Python floats and loops, written straight from the formulas.
# --------------------------------------------------------------------------------------------


def naive_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> float:
    rows = z1.tolist() + z2.tolist()
    n2 = len(rows)
    unit = []
    for r in rows:
        norm = math.sqrt(sum(v * v for v in r))
        unit.append([v / norm for v in r])

    def sim(a: int, b: int) -> float:
        return sum(x * y for x, y in zip(unit[a], unit[b], strict=True)) / temperature

    total = 0.0
    for k in range(n2):
        pos = (k + n2 // 2) % n2
        denom = sum(math.exp(sim(k, j)) for j in range(n2) if j != k)
        total += -math.log(math.exp(sim(k, pos)) / denom)
    return total / n2


def naive_barlow_twins(z1: Tensor, z2: Tensor, lambd: float, scale: float) -> float:
    def standardise(z: list[list[float]]) -> list[list[float]]:
        n, d = len(z), len(z[0])
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            mean = sum(z[b][j] for b in range(n)) / n
            var = sum((z[b][j] - mean) ** 2 for b in range(n)) / n
            for b in range(n):
                out[b][j] = (z[b][j] - mean) / math.sqrt(var + 1e-5)
        return out

    a, b = standardise(z1.tolist()), standardise(z2.tolist())
    n, d = len(a), len(a[0])
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k][i] * b[k][j] for k in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return scale * loss


def _pair(seed: int, n: int = 5, d: int = 4) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    # Correlated second view, like two augmentations of one sample.
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z2


# --------------------------------------------------------------------------------------------
# Single process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_nt_xent_matches_naive_loops(temperature: float, seed: int) -> None:
    z1, z2 = _pair(seed)
    got = nt_xent_loss(z1, z2, temperature)
    assert got.ndim == 0
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-9)


def test_nt_xent_aligned_orthogonal_pairs_closed_form() -> None:
    # Both views of sample i point along e_i (different lengths: only direction counts). For each
    # anchor the positive has cosine 1 and the other 2n-2 candidates cosine 0, so
    # L = -log(e^{1/τ} / (e^{1/τ} + 2n - 2)) = log(1 + (2n - 2) e^{-1/τ}).
    n, tau = 3, 0.25
    z1 = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    z2 = torch.diag(torch.tensor([0.5, 4.0, 1.5], dtype=torch.float64))
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("lambd", "scale"), [(0.0, 1.0), (0.005, 1.0), (0.5, 1.0), (2.0, 0.1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_barlow_twins_matches_naive_loops(lambd: float, scale: float, seed: int) -> None:
    z1, z2 = _pair(seed)
    got = barlow_twins_loss(z1, z2, lambd, scale=scale)
    assert got.ndim == 0
    assert got.item() == pytest.approx(naive_barlow_twins(z1, z2, lambd, scale), rel=1e-9)


def test_barlow_twins_scale_multiplies_and_defaults_to_one() -> None:
    z1, z2 = _pair(3)
    base = barlow_twins_loss(z1, z2, 0.1)
    assert barlow_twins_loss(z1, z2, 0.1, scale=1.0).item() == base.item()
    assert barlow_twins_loss(z1, z2, 0.1, scale=0.025).item() == pytest.approx(
        0.025 * base.item(), rel=1e-12
    )


# Three ±1 Hadamard columns: each has mean 0 and variance 1, and they are mutually orthogonal.
_HADAMARD = torch.tensor(
    [[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]],
    dtype=torch.float64,
)


def test_barlow_twins_hand_computed_cases() -> None:
    eps, lambd = 1e-5, 0.3
    # Every column of z has mean 7 and biased variance 9, so it standardises to 3h / sqrt(9 + eps)
    # (h the ±1 column) and C_ij = (9 / (9 + eps)) h_i·h_j / 4.
    z = 3.0 * _HADAMARD + 7.0
    c = 9 / (9 + eps)
    # Identical, decorrelated views: C = c·I, so L = d(1 - c)² ≈ 3.7e-12.
    assert barlow_twins_loss(z, z.clone(), lambd).item() == pytest.approx(3 * (1 - c) ** 2)
    assert barlow_twins_loss(z, z.clone(), lambd).item() < 1e-10
    # Anti-correlated views: C = -c·I, so L = d(1 + c)² ≈ 12.
    assert barlow_twins_loss(z, -z, lambd).item() == pytest.approx(3 * (1 + c) ** 2)
    # Features 0 and 1 swapped in view 2: C_01 = C_10 = C_22 = c, C_00 = C_11 = 0,
    # so L = 2 + (1 - c)² + 2λc².
    swapped = z[:, [1, 0, 2]]
    assert barlow_twins_loss(z, swapped, lambd).item() == pytest.approx(
        2 + (1 - c) ** 2 + 2 * lambd * c**2
    )


def test_half_precision_and_autocast_are_computed_in_float32() -> None:
    z1, z2 = (t.float() for t in _pair(4, n=8, d=6))
    for loss_fn in (partial(nt_xent_loss, temperature=0.1), partial(barlow_twins_loss, lambd=0.1)):
        ref = loss_fn(z1, z2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            in_autocast = loss_fn(z1, z2)
        assert in_autocast.dtype == torch.float32
        assert in_autocast.item() == pytest.approx(ref.item(), rel=1e-6)
        from_bf16 = loss_fn(z1.bfloat16(), z2.bfloat16())
        assert from_bf16.dtype == torch.float32
        assert from_bf16.item() == pytest.approx(
            loss_fn(z1.bfloat16().float(), z2.bfloat16().float()).item(), rel=1e-6
        )


def test_rejects_bad_inputs() -> None:
    z = torch.randn(4, 3)
    for loss_fn in (partial(nt_xent_loss, temperature=0.5), partial(barlow_twins_loss, lambd=0.1)):
        with pytest.raises(ValueError, match="same shape"):
            loss_fn(z, torch.randn(4, 2))
        with pytest.raises(ValueError, match="same shape"):
            loss_fn(z[0], z[0])
        with pytest.raises(ValueError, match="empty"):
            loss_fn(z[:0], z[:0])
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z, z, 0.0)


# --------------------------------------------------------------------------------------------
# Distributed: a 2-rank gloo group with DDP must reproduce the single-process full-batch result.
# --------------------------------------------------------------------------------------------

_WORLD = 2
_PER_RANK = 4
_LOSSES = {
    "nt_xent": partial(nt_xent_loss, temperature=0.3),
    "barlow_twins": partial(barlow_twins_loss, lambd=0.05, scale=0.5),
}


def _make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8)).double()


def _global_views() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(123)
    x1 = torch.randn(_WORLD * _PER_RANK, 6, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(_WORLD * _PER_RANK, 6, generator=g, dtype=torch.float64)
    return x1, x2


def _loss_and_grads(model: nn.Module, x1: Tensor, x2: Tensor, name: str) -> dict:
    # One forward over both views, as a LightningModule's training_step does under DDP.
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = _LOSSES[name](z1, z2)
    loss.backward()
    params = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {
        "loss": loss.detach().clone(),
        "grads": {k: p.grad.detach().clone() for k, p in params.named_parameters()},
    }


def _ddp_worker(rank: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store_file}",
        rank=rank,
        world_size=_WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        x1, x2 = _global_views()
        rows = slice(rank * _PER_RANK, (rank + 1) * _PER_RANK)
        results = {}
        for name in _LOSSES:
            ddp = nn.parallel.DistributedDataParallel(_make_model())
            results[name] = _loss_and_grads(ddp, x1[rows], x2[rows], name)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # gloo aborts a rank ("terminate called without an active exception") when its peer
        # tears the group down while it still finishes its last collective: meet first
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(fn: Callable[..., None], args: tuple, nprocs: int, timeout_s: float) -> None:
    """Run fn(rank, *args) in `nprocs` spawned processes; fail (not hang) after `timeout_s`."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises on child errors
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"distributed workers did not finish within {timeout_s} s")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_ddp_matches_single_process_full_batch(tmp_path: Path) -> None:
    _spawn(_ddp_worker, (str(tmp_path / "store"), str(tmp_path)), _WORLD, timeout_s=120)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(_WORLD)]

    x1, x2 = _global_views()
    for name in _LOSSES:
        expected = _loss_and_grads(_make_model(), x1, x2, name)
        for rank, results in enumerate(per_rank):
            got = results[name]
            where = f"{name}, rank {rank}"
            torch.testing.assert_close(
                got["loss"], expected["loss"], rtol=1e-10, atol=0, msg=f"loss value: {where}"
            )
            assert got["grads"].keys() == expected["grads"].keys()
            for key, grad in expected["grads"].items():
                torch.testing.assert_close(
                    got["grads"][key], grad, rtol=1e-9, atol=1e-12, msg=f"grad {key}: {where}"
                )
