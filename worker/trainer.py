"""Local training: the only place that runs Keras `fit`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import models


@dataclass(frozen=True)
class TrainResult:
    weights: list[np.ndarray]
    metrics: dict[str, float]
    seconds: float


class Trainer:
    """A compiled Keras model and the worker's local data."""

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray,
                 slowdown: float = 1.0, delay_seconds: float = 0.0) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.slowdown = slowdown
        self.delay_seconds = delay_seconds
        models.compile_for_training(model, learning_rate=0.1)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def train(self, weights: list[np.ndarray], epochs: int, batch_size: int,
              learning_rate: float) -> TrainResult:
        """Start from `weights`, run `epochs` of SGD on the local shard, return the new weights.

        With slowdown f > 1 the call lasts f times as long as the real training (a straggler),
        plus `delay_seconds` (a fixed latency).
        """
        started = time.monotonic()
        self.model.set_weights(weights)
        self.model.optimizer.learning_rate.assign(learning_rate)
        history = self.model.fit(self.x, self.y, epochs=epochs, batch_size=batch_size,
                                 verbose=0, shuffle=True)
        busy = time.monotonic() - started
        time.sleep(busy * (self.slowdown - 1.0) + self.delay_seconds)
        metrics = {name: float(values[-1]) for name, values in history.history.items()}
        return TrainResult([np.asarray(w) for w in self.model.get_weights()], metrics,
                           time.monotonic() - started)
