"""The learning-task contract (common/learning_task.py), FedProx's local step (worker/proximal.py)
against a hand computation, the workers' validation split, and the settings that go with them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from common import data, learning_task
from common.errors import ConfigError
from common.learning_task import LearningTask
from common.settings import CoordinatorSettings
from tests.integration import learning_tasks
from worker.trainer import Trainer


def linear() -> Any:
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])


def test_a_task_is_loaded_by_import_path_and_named_after_it() -> None:
    task = learning_task.load("tests.integration.learning_tasks:regression")
    assert task.name == "tests.integration.learning_tasks:regression"
    assert task.loss == "mse" and task.load_data is not None


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "package.module:function"),
    ("tests.integration.learning_tasks:missing", "cannot import task"),
    ("no.such.module:task", "cannot import task"),
])
def test_a_task_that_cannot_be_loaded_is_a_clear_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        learning_task.load(spec)


def test_any_object_with_build_model_is_a_task_and_the_rest_defaults() -> None:
    # Given a plain object with only a model and a loss
    task = learning_task.as_task(SimpleNamespace(build_model=linear, loss="mse"), "mine")
    # Then its optimizer is SGD and its metrics the classifier's accuracy
    assert task.loss == "mse" and task.fresh_metrics() == ["accuracy"]
    assert type(task.optimizer(0.1)).__name__ == "SGD"
    with pytest.raises(ConfigError, match="no build_model"):
        learning_task.as_task(object(), "nothing")


def test_a_model_whose_outputs_do_not_fit_the_labels_fails_at_start() -> None:
    # Given a task with two outputs for one regression target
    task = learning_tasks.wrong_shape()
    model = learning_task.build(task, seed=0)
    x, y = learning_tasks._regression_data(0, 1, 0)
    # Then the check refuses it, naming the shapes
    with pytest.raises(ConfigError, match=r"cannot train on data of shape \(8,\)"):
        learning_task.check_trainable(model, task, x, y)
    # And the right model passes the same check
    good = learning_tasks.regression()
    learning_task.check_trainable(learning_task.build(good, 0), good, x, y)


def test_metrics_higher_or_lower_is_better_by_name_unless_the_task_says() -> None:
    task = LearningTask(build_model=linear, higher_is_better={"brier": False})
    assert task.better_is_higher("auc") and task.better_is_higher("accuracy")
    assert not task.better_is_higher("loss") and not task.better_is_higher("mae")
    assert not task.better_is_higher("brier")


def test_fedprox_adds_mu_times_the_distance_to_the_global_weights_to_the_gradient() -> None:
    # Given a linear model, MSE, plain SGD, and one full batch per epoch
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]], np.float32)
    y = np.array([[1.0], [2.0], [0.0], [-1.0]], np.float32)
    task = LearningTask(build_model=linear, loss="mse", metrics=())
    trainer = Trainer(learning_task.build(task, 0), x, y, task=task)
    w0 = [np.array([[0.3], [-0.2]], np.float32)]
    lr, mu = 0.05, 2.0
    # When it trains two epochs from w0 with FedProx
    got = trainer.train(w0, epochs=2, batch_size=4, learning_rate=lr, proximal_mu=mu).weights

    # Then each step is w <- w - lr * (2/n x^T (x w - y) + mu (w - w0)), by hand
    def grad(w: np.ndarray) -> np.ndarray:
        return 2.0 / len(x) * x.T @ (x @ w - y)

    w1 = w0[0] - lr * grad(w0[0])  # the proximal term is zero at the global weights
    w2 = w1 - lr * (grad(w1) + mu * (w1 - w0[0]))
    np.testing.assert_allclose(got[0], w2, rtol=1e-5)
    # And without mu the same trainer takes plain SGD steps
    plain = trainer.train(w0, epochs=2, batch_size=4, learning_rate=lr).weights
    np.testing.assert_allclose(plain[0], w1 - lr * grad(w1), rtol=1e-5)


def test_the_validation_split_is_disjoint_seeded_and_of_the_asked_size() -> None:
    train, val = data.validation_split(100, 0.2, seed=3, shard=1)
    assert len(val) == 20 and len(train) == 80
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(100))
    again = data.validation_split(100, 0.2, seed=3, shard=1)
    other = data.validation_split(100, 0.2, seed=3, shard=2)
    assert np.array_equal(val, again[1]) and not np.array_equal(val, other[1])


@pytest.mark.parametrize("flags, message", [
    ({"strategy": "fedasync", "server_optimizer": "adam"}, "use strategy fedbuff"),
    ({"strategy": "fedbuff", "server_optimizer": "yogi", "server_momentum": 0.9},
     "no server_momentum"),
    ({"central_eval": False}, "validation-fraction"),
])
def test_settings_that_cannot_work_are_refused(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CoordinatorSettings(**flags)
