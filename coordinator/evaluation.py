"""Evaluation of global weights on the coordinator's held-out split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common import data, models
from common.settings import CoordinatorSettings


@dataclass(frozen=True)
class Score:
    accuracy: float
    loss: float


class Evaluator:
    """Holds one Keras model instance; `score` loads weights into it and measures them."""

    def __init__(self, model: Any, x_test: np.ndarray, y_test: np.ndarray) -> None:
        self.model = model
        self.x_test = x_test
        self.y_test = y_test

    def score(self, weights: list[np.ndarray]) -> Score:
        self.model.set_weights(weights)
        probabilities = np.asarray(self.model(self.x_test, training=False), dtype=np.float64)
        picked = probabilities[np.arange(len(self.y_test)), self.y_test]
        loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
        accuracy = float(np.mean(np.argmax(probabilities, axis=1) == self.y_test))
        return Score(accuracy=accuracy, loss=loss)

    def save(self, weights: list[np.ndarray], path: str) -> None:
        """Write the weights as a complete `.keras` model file."""
        self.model.set_weights(weights)
        models.compile_for_training(self.model, learning_rate=0.1)
        self.model.save(path)


def for_job(settings: CoordinatorSettings) -> tuple[Evaluator, str, list[np.ndarray]]:
    """The job's evaluator, its model's name and initial weights; a model that cannot work on
    the held-out data is refused here, at start."""
    name = models.resolve_name(settings.model, settings.dataset)
    model = models.build(name, settings.seed)
    x_test, y_test = held_out(settings)
    models.check_compatible(model, x_test, y_test)
    # get_weights returns fresh arrays the model does not share: no second copy of a big model
    return Evaluator(model, x_test, y_test), name, [np.asarray(w) for w in model.get_weights()]


def held_out(settings: CoordinatorSettings) -> tuple[np.ndarray, np.ndarray]:
    """The coordinator's evaluation data: its own file, else the built-in dataset's split."""
    if settings.eval_data_path:
        return data.load_file(data.file_for_shard(settings.eval_data_path, None),
                              settings.label_column)
    split = data.builtin_split(settings.dataset, settings.test_fraction, settings.seed)
    return split.x_test, split.y_test
