"""Finance: banks that keep their customers' records, predicting credit default on an
imbalanced synthetic set (scikit-learn's make_classification, 3 % defaults): AUC and recall,
since accuracy is 97 % for a model that never predicts a default."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from common.learning_task import LearningTask
from examples.sites import held_out, site


@cache
def _credit(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=8000, n_features=20, n_informative=8,
                               weights=[0.97], flip_y=0.0, class_sep=1.0, random_state=seed)
    return x.astype(np.float32), y.astype(np.float32)


def _model() -> Any:
    import keras

    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


def credit_default() -> LearningTask:
    import keras

    return LearningTask(
        build_model=_model, loss="binary_crossentropy",
        metrics=lambda: [keras.metrics.AUC(name="auc"), keras.metrics.Recall(name="recall"),
                         keras.metrics.Precision(name="precision")],
        load_data=lambda shard, n, seed: site(*_credit(seed), shard, n, seed),
        load_eval_data=lambda seed: held_out(*_credit(seed), seed))
