"""What the examples share: a seeded held-out split and IID sites over the rest."""

from __future__ import annotations

import numpy as np

from common import data


def site(x: np.ndarray, y: np.ndarray, shard: int, num_shards: int,
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Site `shard` of `num_shards`: an IID share of the examples left after the held-out 20 %."""
    train, _ = held_out_indices(len(y), seed)
    part = data.partition_iid(len(train), num_shards, seed)[shard]
    return x[train][part], y[train][part]


def held_out(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    _, test = held_out_indices(len(y), seed)
    return x[test], y[test]


def held_out_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 2024]).permutation(n)
    cut = n // 5
    return np.sort(order[cut:]), np.sort(order[:cut])
