"""Keyed randomness: a pure function of (seed, epoch, index, view), uniform, batch-independent."""

import pytest
import torch

from ssl_lightning.data.random_keys import (
    grid_seeds,
    keyed_uniform,
    keyed_uniform_grid,
    sample_keys,
    uniform_at,
)


def ks_distance(u: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the sample's CDF and the uniform CDF."""
    u = u.flatten().double().sort().values
    n = len(u)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return max((steps - u).max().item(), (u - (steps - 1 / n)).max().item())


def test_keys_are_deterministic_and_change_with_every_input():
    index = torch.arange(1000)
    keys = sample_keys(3, 7, index, 1)
    assert keys.dtype == torch.int64 and keys.shape == (1000,)
    assert torch.equal(keys, sample_keys(3, 7, index, 1))
    assert (keys >= 0).all() and len(keys.unique()) == 1000
    for other in (
        sample_keys(4, 7, index, 1),
        sample_keys(3, 8, index, 1),
        sample_keys(3, 7, index, 0),
        sample_keys(3, 7, index + 1000, 1),
        sample_keys(3 + 2**32, 7, index, 1),
    ):
        assert (other != keys).all()


def test_all_views_in_one_call_are_the_keys_of_each_view():
    index = torch.tensor([0, 7, 2**40, 3])
    view = torch.arange(3).repeat_interleave(len(index))
    each = torch.cat([sample_keys(5, 2, index, v) for v in range(3)])
    assert torch.equal(sample_keys(5, 2, index.repeat(3), view), each)


def test_large_and_negative_inputs_are_hashed_not_truncated():
    big = torch.tensor([2**40, 2**40 + 1, -1, -2])
    keys = sample_keys(-5, 2**31, big, 3)
    assert (keys >= 0).all() and len(keys.unique()) == 4


def test_a_samples_numbers_do_not_depend_on_its_batch():
    index = torch.tensor([11, 3, 42, 7])
    batch = sample_keys(0, 2, index, 0)
    alone = sample_keys(0, 2, index[2:3], 0)
    assert torch.equal(batch[2:3], alone)
    assert torch.equal(keyed_uniform(batch, 5)[2:3], keyed_uniform(alone, 5))
    assert torch.equal(
        keyed_uniform_grid(batch, (2, 4, 4))[2:3], keyed_uniform_grid(alone, (2, 4, 4))
    )
    # a longer stream starts with the shorter one: adding draws never shifts the earlier ones
    assert torch.equal(keyed_uniform(batch, 9)[:, :5], keyed_uniform(batch, 5))


def test_uniforms_have_the_uniform_distribution():
    keys = sample_keys(0, 0, torch.arange(100_000), 0)
    per_sample = keyed_uniform(keys, 3)
    grid = keyed_uniform_grid(keys[:100], (10, 100))
    for u in (per_sample[:, 0], per_sample[:, 2], grid.flatten()):
        assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
        assert abs(u.mean().item() - 0.5) < 0.005
        assert abs(u.var().item() - 1 / 12) < 0.002
        assert ks_distance(u) < 0.01  # the 0.1% critical value at n = 1e5 is 0.0062


def test_views_epochs_and_columns_are_uncorrelated():
    index = torch.arange(50_000)
    view0 = keyed_uniform(sample_keys(0, 0, index, 0), 2)
    view1 = keyed_uniform(sample_keys(0, 0, index, 1), 2)
    epoch1 = keyed_uniform(sample_keys(0, 1, index, 0), 2)
    neighbour = keyed_uniform(sample_keys(0, 0, index + 1, 0), 2)
    for a, b in (
        (view0[:, 0], view1[:, 0]),
        (view0[:, 0], epoch1[:, 0]),
        (view0[:, 0], view0[:, 1]),
        (view0[:, 0], neighbour[:, 0]),
    ):
        assert (a != b).float().mean() > 0.999
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.03


def test_parameter_and_grid_streams_are_separate():
    keys = sample_keys(0, 0, torch.arange(20_000), 0)
    params = keyed_uniform(keys, 4)
    grid = keyed_uniform_grid(keys, (4,))
    assert (params != grid).float().mean() > 0.999


def test_uniform_at_reads_the_grid_without_building_it():
    keys = sample_keys(1, 2, torch.arange(6), 0)
    grid = keyed_uniform_grid(keys, (3, 5)).view(6, 15)
    rows = torch.tensor([5, 0, 0, 3])
    counters = torch.tensor([14, 0, 7, 9])
    assert torch.equal(uniform_at(grid_seeds(keys)[rows], counters), grid[rows, counters])


def test_grids_too_large_for_the_counter_are_refused():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        keyed_uniform_grid(torch.zeros(1, dtype=torch.int64), (2**16, 2**15))
