"""Healthcare: hospitals that keep their patients' records (scikit-learn's breast cancer and
diabetes data, split among sites).

- `breast_cancer`: malignant or benign from 30 measurements, one sigmoid output, AUC;
- `diabetes`: disease progression after a year from 10 measurements, a regression (MSE, MAE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import data
from common.learning_task import LearningTask
from examples.sites import held_out, site


def _mlp(inputs: int, hidden: int, activation: str) -> Any:
    import keras

    return keras.Sequential([keras.Input((inputs,)),
                             keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(1, activation=activation)])


def _cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = data.load_builtin("breast_cancer")  # fixed public per-feature scaling
    return x, y.astype(np.float32)


def breast_cancer() -> LearningTask:
    import keras

    return LearningTask(
        build_model=lambda: _mlp(30, 16, "sigmoid"), loss="binary_crossentropy",
        metrics=lambda: [keras.metrics.AUC(name="auc"),
                         keras.metrics.BinaryAccuracy(name="accuracy")],
        load_data=lambda shard, n, seed: site(*_cancer(), shard, n, seed),
        load_eval_data=lambda seed: held_out(*_cancer(), seed))


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    x, y = datasets.load_diabetes(return_X_y=True)  # features already centred and scaled
    # x * 20 brings the features to unit scale; the target (25 to 346) is in hundreds
    return (x * 20).astype(np.float32), (y / 100.0).astype(np.float32)


def diabetes() -> LearningTask:
    return LearningTask(
        build_model=lambda: _mlp(10, 32, "linear"), loss="mse", metrics=("mae",),
        load_data=lambda shard, n, seed: site(*_diabetes(), shard, n, seed),
        load_eval_data=lambda seed: held_out(*_diabetes(), seed))
