"""Which data a worker trains on: a shard of a built-in dataset, or a data file of its own."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import data
from common.settings import WorkerSettings


@dataclass(frozen=True)
class TrainingData:
    x: np.ndarray
    y: np.ndarray
    source: str


def needs_lease(settings: WorkerSettings) -> bool:
    """A worker leases a shard unless it has a fixed one or a data file that names no shard."""
    if settings.shard_index is not None:
        return False
    return not settings.data_path or data.SHARD_PLACEHOLDER in settings.data_path


def load(settings: WorkerSettings, shard: int | None, num_shards: int) -> TrainingData:
    """The worker's training data for `shard` (None: a data file used whole)."""
    if settings.data_path:
        path = data.file_for_shard(settings.data_path, shard)
        x, y = data.load_file(path, settings.label_column)
        return TrainingData(x, y, str(path))
    assert shard is not None, "a built-in dataset is always used one shard at a time"
    x, y = data.builtin_shard(settings.dataset, settings.test_fraction, settings.seed,
                              settings.partition, settings.dirichlet_alpha, num_shards, shard)
    return TrainingData(x, y, f"{settings.dataset} shard {shard}/{num_shards}")
