"""A synchronous lab for aggregation experiments without a broker: shards of digits, real Keras
training (worker.trainer.Trainer) of every worker's update from the same global weights, and
held-out accuracy (coordinator.evaluation.Evaluator). Each step's buffer therefore holds one
delta per worker, all of staleness 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import data, models
from coordinator.evaluation import Evaluator

Arrays = list[np.ndarray]


@dataclass(frozen=True)
class Setup:
    rounds: int = 20
    workers: int = 10
    local_epochs: int = 2
    learning_rate: float = 0.5
    server_lr: float = 1.0  # x <- x + server_lr * aggregate, for every strategy alike
    batch_size: int = 16
    partition: str = "iid"
    seed: int = 0


class Lab:
    def __init__(self, setup: Setup) -> None:
        from worker.trainer import Trainer

        models.configure_tensorflow(1)
        self.setup = setup
        self.split = data.builtin_split("digits", 0.2, setup.seed)
        self.shards = data.partition(self.split.y_train, setup.workers, setup.partition, 0.5,
                                     setup.seed)
        model = models.build("digits_mlp", setup.seed)
        self.initial = [np.array(w) for w in model.get_weights()]
        self.trainer = Trainer(model, self.split.x_train, self.split.y_train)
        self.evaluator = Evaluator(models.build("digits_mlp", setup.seed), self.split.x_test,
                                   self.split.y_test)

    def deltas(self, weights: Arrays) -> list[Arrays]:
        """Every worker's delta (trained - weights) after local training from `weights`."""
        out = []
        for shard in self.shards:
            self.trainer.x, self.trainer.y = self.split.x_train[shard], self.split.y_train[shard]
            trained = self.trainer.train(weights, self.setup.local_epochs, self.setup.batch_size,
                                         self.setup.learning_rate).weights
            out.append([t - w for t, w in zip(trained, weights, strict=True)])
        return out

    def step(self, weights: Arrays, aggregate: Arrays) -> Arrays:
        """weights + server_lr * aggregate, in the weights' dtypes."""
        return [(w + self.setup.server_lr * a).astype(w.dtype)
                for w, a in zip(weights, aggregate, strict=True)]

    def accuracy(self, weights: Arrays) -> float:
        return self.evaluator.accuracy_of(weights)
