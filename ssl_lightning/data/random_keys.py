"""Counter-based randomness: uniforms that are a pure function of (seed, epoch, sample, view).

Views are made on the device for a whole batch at once. Drawing them from a global generator
would tie each sample's view to the batch composition, the rank and the order of draws, so a DDP
run would not see the views of a single-process run and a resumed run would not replay its views.
Instead each sample gets a key hashed from (seed, epoch, index, view), and every random number is
a hash of (key, counter): the j-th number of a sample's stream depends on nothing else.

The arithmetic runs on int64 tensors holding 32-bit values. The multipliers are odd and below
2**31, so no product reaches 2**63: nothing overflows and nothing turns negative (a right shift
of a negative int64 would be arithmetic). The same integers come out on every device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
_MUL_1 = 0x21F0AAAD  # odd multipliers below 2**31 with good avalanche in a two-round xorshift hash
_MUL_2 = 0x735A2D97
_WEYL = 0x9E3779B9  # golden-ratio step: counter * _WEYL mod 2**32 never repeats within 2**32
_MAX_COUNTER = 2**31  # keeps counter * _WEYL + seed below 2**63
_KEY_SALTS = (0x3C6EF372, 0x1B873593)  # two independent lanes make a 63-bit key
_PARAM_SALT = 0x68E31DA4  # per-sample parameters (keyed_uniform) ...
_GRID_SALT = 0x5D588B65  # ... and per-element draws (grids) come from separate streams


def _mix(h: Tensor) -> Tensor:
    """Scrambles 32-bit values in place (bijective), so nearby inputs give unrelated outputs."""
    h ^= h >> 16
    h.mul_(_MUL_1).bitwise_and_(_MASK)
    h ^= h >> 15
    h.mul_(_MUL_2).bitwise_and_(_MASK)
    h ^= h >> 15
    return h


def sample_keys(seed: int, epoch: int, index: Tensor, view: int | Tensor) -> Tensor:
    """One non-negative int64 key per sample (same device as `index`).

    `view` may be a tensor of `index`'s shape: all views of a batch in one call (a fixed few
    dozen ops on the whole batch, not per view). Seed is taken modulo 2**64, epoch and view
    modulo 2**32; distinct inputs collide with probability about 2**-63 per pair.
    """
    index = index.long()
    words = (
        seed & _MASK,
        (seed >> 32) & _MASK,
        epoch & _MASK,
        view & _MASK,
        index & _MASK,
        (index >> 32) & _MASK,
    )
    # both lanes as the rows of one tensor: each mixing op runs once for the two
    h = torch.stack([torch.full_like(index, salt) for salt in _KEY_SALTS])
    for word in words:
        h = _mix(h ^ word)
    return ((h[0] & 0x7FFFFFFF) << 32) | h[1]


def _stream_seeds(keys: Tensor, salt: int) -> Tensor:
    """Folds each 63-bit key into the 32-bit seed of one named stream."""
    h = _mix((keys & _MASK) ^ salt)
    return _mix(h ^ ((keys >> 32) & _MASK))


def _uniform(seeds: Tensor, counters: Tensor) -> Tensor:
    """Float32 uniforms in [0, 1) from broadcast (seed, counter) pairs, 24 random bits each."""
    h = _mix((seeds + counters * _WEYL).bitwise_and_(_MASK))
    return (h >> 8).to(torch.float32).mul_(2.0**-24)


def keyed_uniform(keys: Tensor, count: int) -> Tensor:
    """[N, count] uniforms: row i is the first `count` numbers of sample i's parameter stream."""
    seeds = _stream_seeds(keys.long(), _PARAM_SALT)[:, None]
    return _uniform(seeds, torch.arange(count, device=keys.device))


def keyed_uniform_grid(keys: Tensor, shape: tuple[int, ...]) -> Tensor:
    """[N, *shape] per-element uniforms (e.g. per-pixel noise), independent of keyed_uniform."""
    size = math.prod(shape)
    if size >= _MAX_COUNTER:
        raise ValueError(f"a grid of {size} elements per sample exceeds 2**31")
    seeds = _stream_seeds(keys.long(), _GRID_SALT)[:, None]
    return _uniform(seeds, torch.arange(size, device=keys.device)).view(len(keys), *shape)


def grid_seeds(keys: Tensor) -> Tensor:
    """[N] seeds of the samples' per-element streams (those of `keyed_uniform_grid`).

    Worked out once per batch: `uniform_at` then draws at any elements for the cost of one
    hash per draw, so sparse images draw noise only where they have hits.
    """
    return _stream_seeds(keys.long(), _GRID_SALT)


def uniform_at(seeds: Tensor, counters: Tensor) -> Tensor:
    """keyed_uniform_grid(keys, shape).view(N, -1)[rows, counters] without building the grid,
    for seeds = grid_seeds(keys)[rows]; counters must lie in [0, 2**31). Counters of shape
    [k, len(seeds)] draw k numbers per seed in one pass."""
    return _uniform(seeds, counters)
