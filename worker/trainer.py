"""Local training: the only place that runs Keras `fit`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import learning_task, models
from common.learning_task import LearningTask
from worker.proximal import make_proximal


@dataclass(frozen=True)
class TrainResult:
    weights: list[np.ndarray]
    metrics: dict[str, float]
    seconds: float


class Trainer:
    """A compiled Keras model and the worker's local data.

    Without a learning task the model is the built-in softmax classifier (SGD, sparse
    cross-entropy, accuracy); with one, it compiles with the task's optimizer, loss and metrics.
    A task with proximal_mu > 0 (FedProx) trains through a proximal wrapper (worker/proximal.py),
    built on first use.
    """

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray,
                 slowdown: float = 1.0, delay_seconds: float = 0.0,
                 task: LearningTask | None = None) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.slowdown = slowdown
        self.delay_seconds = delay_seconds
        self.task = task
        self.proximal: Any = None
        self._compile(model)

    def _compile(self, model: Any) -> None:
        if self.task is None:
            models.compile_for_training(model, learning_rate=0.1)
        else:
            learning_task.compile_model(model, self.task, learning_rate=0.1)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def _fitted(self, mu: float) -> Any:
        """The model `fit` runs on: the model itself, or its FedProx wrapper anchored here."""
        if mu <= 0:
            return self.model
        if self.proximal is None:
            self.proximal = make_proximal(self.model)
            self._compile(self.proximal)
        self.proximal.anchor(mu)
        return self.proximal

    def train(self, weights: list[np.ndarray], epochs: int, batch_size: int,
              learning_rate: float, proximal_mu: float = 0.0) -> TrainResult:
        """Start from `weights`, run `epochs` of local training on the shard (with FedProx's
        proximal term towards `weights` when proximal_mu > 0), return the new weights.

        With slowdown f > 1 the call lasts f times as long as the real training (a straggler),
        plus `delay_seconds` (a fixed latency).
        """
        started = time.monotonic()
        self.model.set_weights(weights)
        fitted = self._fitted(proximal_mu)
        fitted.optimizer.learning_rate.assign(learning_rate)
        history = fitted.fit(self.x, self.y, epochs=epochs, batch_size=batch_size,
                             verbose=0, shuffle=True)
        busy = time.monotonic() - started
        time.sleep(busy * (self.slowdown - 1.0) + self.delay_seconds)
        metrics = {name: float(values[-1]) for name, values in history.history.items()}
        return TrainResult([np.asarray(w) for w in self.model.get_weights()], metrics,
                           time.monotonic() - started)
