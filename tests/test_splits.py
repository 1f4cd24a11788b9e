"""Splits are deterministic and disjoint; labelled subsets are stratified and nested."""

import numpy as np
import pytest

from ssl_lightning.data.splits import labelled_subset, load_split, make_split, save_split
from ssl_lightning.errors import UserError


def test_split_is_a_deterministic_partition():
    a = make_split(1000, 0.1, 0.2, seed=3)
    b = make_split(1000, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (len(a["val"]), len(a["test"]), len(a["train"])) == (100, 200, 700)
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(1000))
    assert not np.array_equal(make_split(1000, 0.1, 0.2, seed=4)["val"], a["val"])


def test_label_fractions_are_stratified_and_nested():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    train = np.arange(1000)
    small = labelled_subset(train, labels, 0.01, seed=0)
    large = labelled_subset(train, labels, 0.1, seed=0)
    assert set(small) <= set(large)
    assert np.bincount(labels[large]).tolist() == [60, 30, 10]
    assert np.bincount(labels[small]).tolist() == [6, 3, 1]
    assert np.array_equal(labelled_subset(train, labels, 1.0, seed=0), train)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_outside_unit_interval_is_a_user_error(fraction: float):
    with pytest.raises(UserError, match="label_fraction"):
        labelled_subset(np.arange(10), None, fraction, seed=0)


def test_saved_split_round_trips_and_refuses_other_data(tmp_path):
    split = make_split(50, 0.2, 0.2, seed=0)
    save_split(split, tmp_path / "split.npz", "abc")
    loaded = load_split(tmp_path / "split.npz", "abc")
    assert all(np.array_equal(split[k], loaded[k]) for k in split)
    with pytest.raises(UserError, match="other data"):
        load_split(tmp_path / "split.npz", "xyz")
