"""Datasets and how a training split is divided into the shards that workers keep to themselves.

Built-in datasets ship inside scikit-learn (nothing is downloaded). The train/test split and the
partition are pure functions of the seed, so every process derives the same shards independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

MIN_SHARD_SIZE = 10


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and integer labels of a dataset that ships with scikit-learn."""
    from sklearn import datasets

    if name == "digits":
        x, y = datasets.load_digits(return_X_y=True)
        return (x / 16.0).astype(np.float32), y.astype(np.int64)
    if name == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        # A fixed, public per-feature transform (log scale, then the dataset's published ranges)
        # keeps every shard on the same scale without pooling statistics from the shards.
        x = np.log1p(x)
        x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
        return x.astype(np.float32), y.astype(np.int64)
    raise ConfigError(f"unknown dataset {name!r}; built-in datasets: digits, breast_cancer")


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Split:
    """Stratified split: the test share of every class goes to the coordinator's held-out set."""
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(members[: int(round(len(members) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    return Split(x[train], y[train], x[test], y[test], int(y.max()) + 1)


def partition_iid(num_examples: int, num_shards: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into shards of (nearly) equal size."""
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_shards)]


def partition_dirichlet(labels: np.ndarray, num_shards: int, alpha: float, seed: int,
                        min_size: int = MIN_SHARD_SIZE) -> list[np.ndarray]:
    """Label-skewed shards: each class is split among shards by proportions ~ Dir(alpha).

    Redraws (up to 1000 times) until every shard holds at least `min_size` examples, the usual
    practice since Hsu et al. 2019; raises ConfigError if that cannot be met.
    """
    if num_shards * min_size > len(labels):
        raise ConfigError(f"{len(labels)} examples cannot fill {num_shards} shards of "
                          f"{min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_shards)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_shards, alpha))) * len(members))
            for shard, part in zip(shards, np.split(members, cuts.astype(int)[:-1]),
                                   strict=True):
                shard.append(part)
        result = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(r) for r in result) >= min_size:
            return result
    raise ConfigError(f"no Dirichlet({alpha}) partition into {num_shards} shards of at least "
                      f"{min_size} examples")


def partition(labels: np.ndarray, num_shards: int, method: str, alpha: float,
              seed: int) -> list[np.ndarray]:
    """Indices of every shard; every example is in exactly one shard."""
    if not 1 <= num_shards <= len(labels):
        raise ConfigError(f"cannot split {len(labels)} examples into {num_shards} shards")
    if method == "dirichlet" and not alpha > 0:
        raise ConfigError(f"Dirichlet alpha must be positive, got {alpha}")
    if method == "iid":
        return partition_iid(len(labels), num_shards, seed)
    if method == "dirichlet":
        return partition_dirichlet(labels, num_shards, alpha, seed)
    raise ConfigError(f"unknown partition {method!r}; use iid or dirichlet")


def builtin_split(dataset: str, test_fraction: float, seed: int) -> Split:
    x, y = load_builtin(dataset)
    return train_test_split(x, y, test_fraction, seed)


def builtin_shard(dataset: str, test_fraction: float, seed: int, method: str, alpha: float,
                  num_shards: int, shard_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) a worker trains on: one shard of the training split of a built-in dataset."""
    split = builtin_split(dataset, test_fraction, seed)
    index = partition(split.y_train, num_shards, method, alpha, seed)[shard_index]
    return split.x_train[index], split.y_train[index]
