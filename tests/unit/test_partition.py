"""Datasets, the train/test split, and the partition of the training split into worker shards."""

from __future__ import annotations

import numpy as np
import pytest

from common import data
from common.errors import ConfigError

LABELS = np.repeat(np.arange(10), 50)


def label_mix(labels: np.ndarray, shards: list[np.ndarray]) -> np.ndarray:
    return np.array([np.bincount(labels[s], minlength=10) / len(s) for s in shards])


def mean_tv_distance(mix: np.ndarray) -> float:
    """Mean total-variation distance of each shard's label mix from the overall mix."""
    overall = mix.mean(axis=0)
    return float(np.mean(0.5 * np.abs(mix - overall).sum(axis=1)))


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
@pytest.mark.parametrize("shards", [1, 3, 8])
def test_every_example_is_in_exactly_one_shard(method: str, shards: int) -> None:
    parts = data.partition(LABELS, shards, method, alpha=0.5, seed=1)
    assert len(parts) == shards
    every = np.concatenate(parts)
    assert len(every) == len(LABELS)
    assert np.array_equal(np.sort(every), np.arange(len(LABELS)))


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_partition_is_reproducible_from_the_seed(method: str) -> None:
    first = data.partition(LABELS, 4, method, 0.5, seed=7)
    again = data.partition(LABELS, 4, method, 0.5, seed=7)
    other = data.partition(LABELS, 4, method, 0.5, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_shards_differ_in_label_mix_and_iid_shards_do_not() -> None:
    dirichlet = mean_tv_distance(label_mix(LABELS, data.partition(LABELS, 5, "dirichlet",
                                                                  0.5, 0)))
    iid = mean_tv_distance(label_mix(LABELS, data.partition(LABELS, 5, "iid", 0.5, 0)))
    assert dirichlet > 0.3
    assert iid < 0.1
    assert dirichlet > 3 * iid


def test_smaller_alpha_means_more_skew() -> None:
    skew = [mean_tv_distance(label_mix(LABELS, data.partition(LABELS, 5, "dirichlet", a, 0)))
            for a in (100.0, 1.0, 0.1)]
    assert skew[0] < skew[1] < skew[2]


def test_dirichlet_shards_respect_the_minimum_size() -> None:
    parts = data.partition_dirichlet(LABELS, 10, alpha=0.1, seed=3, min_size=20)
    assert min(len(p) for p in parts) >= 20


def test_impossible_partitions_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot fill"):
        data.partition_dirichlet(LABELS, 100, alpha=0.5, seed=0)
    with pytest.raises(ConfigError, match="unknown partition"):
        data.partition(LABELS, 2, "alphabetical", 0.5, 0)


def test_split_is_stratified_disjoint_and_reproducible() -> None:
    # Given features that are simply each example's index
    _, y = data.load_builtin("digits")
    index = np.arange(len(y)).reshape(-1, 1)
    # When the data is split twice with the same seed
    split = data.train_test_split(index, y, test_fraction=0.2, seed=0)
    again = data.train_test_split(index, y, test_fraction=0.2, seed=0)
    # Then the split is the same, train and test are disjoint and together hold every example
    assert np.array_equal(split.x_test, again.x_test)
    train, test = set(split.x_train.ravel()), set(split.x_test.ravel())
    assert not train & test and len(train | test) == len(y)
    # And every class gives 20% of its examples to the test split
    for label in range(10):
        assert abs(np.sum(split.y_test == label) - 0.2 * np.sum(y == label)) <= 1


@pytest.mark.parametrize(("name", "shape", "classes"), [("digits", (1797, 64), 10),
                                                        ("breast_cancer", (569, 30), 2)])
def test_builtin_datasets_ship_with_scikit_learn(name: str, shape: tuple[int, int],
                                                 classes: int) -> None:
    x, y = data.load_builtin(name)
    assert x.shape == shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(classes))


def test_unknown_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        data.load_builtin("mnist-from-the-internet")
