"""Which data a worker trains on: a shard of a built-in dataset, a data file of its own, or what
the user's learning task loads; and the local validation split it keeps for federated evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import data
from common.errors import ConfigError
from common.learning_task import LearningTask
from common.settings import WorkerSettings


@dataclass(frozen=True)
class TrainingData:
    x: np.ndarray
    y: np.ndarray
    source: str
    x_val: np.ndarray | None = None  # the local validation split (--validation-fraction)
    y_val: np.ndarray | None = None


def needs_lease(settings: WorkerSettings) -> bool:
    """A worker leases a shard unless it has a fixed one or a data file that names no shard."""
    if settings.shard_index is not None:
        return False
    return not settings.data_path or data.SHARD_PLACEHOLDER in settings.data_path


def load(settings: WorkerSettings, shard: int | None, num_shards: int,
         task: LearningTask | None = None) -> TrainingData:
    """The worker's data for `shard` (None: a data file used whole), with its validation split."""
    if settings.data_path:
        path = data.file_for_shard(settings.data_path, shard)
        x, y = data.load_file(path, settings.label_column)
        source = str(path)
    elif task is not None and task.load_data is not None:
        assert shard is not None, "a task's data is always loaded one shard at a time"
        x, y = (np.asarray(a) for a in task.load_data(shard, num_shards, settings.seed))
        source = f"{task.name} shard {shard}/{num_shards}"
    else:
        assert shard is not None, "a built-in dataset is always used one shard at a time"
        x, y = data.builtin_shard(settings.dataset, settings.test_fraction, settings.seed,
                                  settings.partition, settings.dirichlet_alpha, num_shards, shard)
        source = f"{settings.dataset} shard {shard}/{num_shards}"
    if settings.validation_fraction <= 0:
        return TrainingData(x, y, source)
    train, val = data.validation_split(len(y), settings.validation_fraction, settings.seed,
                                       0 if shard is None else shard)
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"{source}: {len(y)} examples leave nothing to train or validate on "
                          f"with validation_fraction {settings.validation_fraction}")
    return TrainingData(x[train], y[train], source, x[val], y[val])
