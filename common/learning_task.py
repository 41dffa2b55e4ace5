"""The learning-task contract: the user's model together with its loss, local optimizer, metrics
and local data, given as `--task package.module:function`.

The function takes no argument and returns a `LearningTask` (or any object with the same
attribute names: only `build_model` is required). Both roles import it and build the same model
from the same seed, so the coordinator's architecture fingerprint matches every worker's.

- `build_model()`: a fresh, uncompiled Keras model (any output: softmax, sigmoid, several
  sigmoids for multi-label, linear for regression).
- `loss`, `metrics`: what `model.compile` takes. Metrics may be a zero-argument function
  returning fresh metric objects (`lambda: [keras.metrics.AUC(name="auc")]`): a metric object
  holds state and must not be shared by two models.
- `optimizer(learning_rate)`: the local optimizer; default plain SGD.
- `load_data(shard, num_shards, seed)`: a worker's local (x, y); default: `--data-path` or the
  built-in `--dataset` shard, as without a task.
- `load_eval_data(seed)`: the coordinator's held-out (x, y); default: none (the coordinator then
  holds no data and the job is evaluated on the workers: `--validation-fraction`).
- `higher_is_better`: per metric name, whether larger is better (for the worst worker); names not
  listed count as lower-better when they contain loss/error/mse/mae, else as higher-better.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common import models
from common.errors import ConfigError

Data = tuple[np.ndarray, np.ndarray]
LOWER_BETTER_HINTS = ("loss", "error", "mse", "mae")


def _sgd(learning_rate: float) -> Any:
    import keras

    return keras.optimizers.SGD(learning_rate)


@dataclass(frozen=True)
class LearningTask:
    """A model, how it learns, how it is measured and where a site's data comes from."""

    build_model: Callable[[], Any]
    loss: Any = "sparse_categorical_crossentropy"
    metrics: Sequence[Any] | Callable[[], Sequence[Any]] = ("accuracy",)
    optimizer: Callable[[float], Any] = _sgd
    load_data: Callable[[int, int, int], Data] | None = None
    load_eval_data: Callable[[int], Data] | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    name: str = ""

    def fresh_metrics(self) -> list[Any]:
        return list(self.metrics() if callable(self.metrics) else self.metrics)

    def better_is_higher(self, metric: str) -> bool:
        if metric in self.higher_is_better:
            return self.higher_is_better[metric]
        return not any(hint in metric.lower() for hint in LOWER_BETTER_HINTS)


def load(spec: str) -> LearningTask:
    """The task `package.module:function` returns; a ConfigError says what is wrong."""
    module_name, colon, function_name = spec.partition(":")
    if not colon or not module_name or not function_name:
        raise ConfigError(f"task {spec!r}: give it as 'package.module:function'")
    models.import_keras()  # before the task's module imports Keras itself
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import task {spec!r}: {exc}") from None
    return as_task(factory(), spec)


def as_task(value: Any, name: str) -> LearningTask:
    """A LearningTask from one, or from any object with its attribute names."""
    if isinstance(value, LearningTask):
        return value if value.name else _renamed(value, name)
    if not callable(getattr(value, "build_model", None)):
        raise ConfigError(f"task {name!r} returned {type(value).__name__}, which has no "
                          f"build_model(): return a common.learning_task.LearningTask")
    defaults = LearningTask(build_model=value.build_model)
    fields = {key: getattr(value, key, getattr(defaults, key))
              for key in ("loss", "metrics", "optimizer", "load_data", "load_eval_data",
                          "higher_is_better")}
    return LearningTask(build_model=value.build_model, name=name, **fields)


def _renamed(task: LearningTask, name: str) -> LearningTask:
    from dataclasses import replace

    return replace(task, name=name)


def build(task: LearningTask, seed: int) -> Any:
    """The task's fresh model; the same task and seed give the same initial weights."""
    models.import_keras()
    import keras

    keras.utils.set_random_seed(seed)
    model = task.build_model()
    if not hasattr(model, "get_weights"):
        raise ConfigError(f"task {task.name!r}: build_model returned {type(model).__name__}, "
                          f"not a Keras model")
    return model


def compile_model(model: Any, task: LearningTask, learning_rate: float) -> None:
    """Compile with the task's loss, metrics and optimizer (fresh metric objects each time)."""
    model.compile(optimizer=task.optimizer(learning_rate), loss=task.loss,
                  metrics=task.fresh_metrics())


def check_trainable(model: Any, task: LearningTask, x: np.ndarray, y: np.ndarray) -> None:
    """Fail early, with a clear message, if the model and loss cannot work on this data: the
    loss and metrics are computed on a few examples (a wrong output shape for the labels, a loss
    for another kind of label, a non-finite loss all show here)."""
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(f"task {task.name!r}: data needs as many labels as examples, got "
                          f"{x.shape} and {y.shape}")
    try:
        compile_model(model, task, 0.01)
        scores = model.evaluate(x[:8], y[:8], verbose=0, return_dict=True)
    except Exception as exc:  # Keras raises many types for a shape or loss mismatch
        raise ConfigError(f"task {task.name!r}: the model cannot train on data of shape "
                          f"{x.shape[1:]} with labels of shape {y.shape[1:]}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    if not np.isfinite(float(scores["loss"])):
        raise ConfigError(f"task {task.name!r}: the loss on the first examples is "
                          f"{scores['loss']}: check the labels against the loss")


def ordering(task: LearningTask | None) -> Callable[[str], bool]:
    """Whether a larger value of a metric is better: the task's say, else by the metric's name."""
    return (task or LearningTask(build_model=lambda: None)).better_is_higher


def fresh_model(task: LearningTask | None, model_name: str, seed: int) -> Any:
    """The job's fresh model: the task's, or the built-in spec `model_name`."""
    from common import models

    return models.build(model_name, seed) if task is None else build(task, seed)


def check(model: Any, task: LearningTask | None, x: np.ndarray, y: np.ndarray) -> None:
    """The start check: the task's (check_trainable), or the built-in softmax classifier's."""
    from common import models

    if task is None:
        models.check_compatible(model, x, y)
    else:
        check_trainable(model, task, x, y)
