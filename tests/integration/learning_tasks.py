"""Learning tasks of the user's own (common/learning_task.py) on small generated data, for the
integration tests: a regression, a binary sigmoid classifier with AUC, a multi-label classifier.
Each site's data comes from `load_data(shard, num_shards, seed)`; the generating rule is the same
everywhere (a fixed random linear map), only the examples differ per shard."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.learning_task import LearningTask

FEATURES = 8
PER_SHARD = 120


def _features(shard: int, seed: int, n: int = PER_SHARD) -> np.ndarray:
    return np.random.default_rng([seed, 17, shard]).normal(size=(n, FEATURES)).astype(np.float32)


def _rule(seed: int, outputs: int) -> np.ndarray:
    return np.random.default_rng([seed, 99]).normal(size=(FEATURES, outputs)).astype(np.float32)


def _dense(outputs: int, activation: str) -> Any:
    import keras

    return keras.Sequential([keras.Input((FEATURES,)),
                             keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(outputs, activation=activation)])


def _regression_data(shard: int, num_shards: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = _features(shard, seed)
    return x, (x @ _rule(seed, 1))[:, 0]


def _binary_data(shard: int, num_shards: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = _features(shard, seed)
    return x, ((x @ _rule(seed, 1))[:, 0] > 0).astype(np.float32)


def _multilabel_data(shard: int, num_shards: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = _features(shard, seed)
    return x, (x @ _rule(seed, 3) > 0).astype(np.float32)


def _adam(learning_rate: float) -> Any:
    import keras

    return keras.optimizers.Adam(learning_rate)


def regression() -> LearningTask:
    """A linear output, mean squared error, Adam locally; no data on the coordinator."""
    return LearningTask(build_model=lambda: _dense(1, "linear"), loss="mse",
                        metrics=("mae",), optimizer=_adam, load_data=_regression_data)


def binary() -> LearningTask:
    """A sigmoid output with binary cross-entropy and AUC; held-out data on the coordinator."""
    import keras

    return LearningTask(build_model=lambda: _dense(1, "sigmoid"), loss="binary_crossentropy",
                        metrics=lambda: [keras.metrics.AUC(name="auc"),
                                         keras.metrics.BinaryAccuracy(name="accuracy")],
                        load_data=_binary_data,
                        load_eval_data=lambda seed: _binary_data(1000, 1, seed))


def multilabel() -> LearningTask:
    """Three independent sigmoid outputs (labels may co-occur) with binary cross-entropy."""
    import keras

    return LearningTask(build_model=lambda: _dense(3, "sigmoid"), loss="binary_crossentropy",
                        metrics=lambda: [keras.metrics.AUC(name="auc", multi_label=True)],
                        load_data=_multilabel_data,
                        load_eval_data=lambda seed: _multilabel_data(1000, 1, seed))


def wrong_shape() -> LearningTask:
    """Two outputs for one regression target: the loss cannot be computed."""
    return LearningTask(build_model=lambda: _dense(2, "linear"), loss="mse",
                        metrics=("mae",), load_data=_regression_data,
                        load_eval_data=lambda seed: _regression_data(1000, 1, seed))
