"""Model specs: named Keras model builders, import-path models, and architecture fingerprints."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.errors import ConfigError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_MODEL = {"digits": "digits_mlp", "breast_cancer": "breast_cancer_mlp"}


def _mlp(inputs: int, hidden: int, classes: int) -> Any:
    import keras

    return keras.Sequential([
        keras.Input((inputs,), name="features"),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(classes, activation="softmax", name="output"),
    ])


SPECS: dict[str, Callable[[], Any]] = {
    "digits_mlp": lambda: _mlp(64, 64, 10),
    "breast_cancer_mlp": lambda: _mlp(30, 16, 2),
}


def resolve_name(model: str, dataset: str) -> str:
    """The model spec to use: the one given, else the dataset's default."""
    if model:
        return model
    if dataset not in DEFAULT_MODEL:
        raise ConfigError(f"dataset {dataset!r} has no default model; give --model")
    return DEFAULT_MODEL[dataset]


def build(name: str, seed: int) -> Any:
    """A fresh, uncompiled Keras model; the same name and seed give the same initial weights."""
    import_keras()
    import keras

    keras.utils.set_random_seed(seed)
    if name in SPECS:
        return SPECS[name]()
    if ":" in name:
        module_name, _, function_name = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import model {name!r}: {exc}") from None
        model = factory()
        if not hasattr(model, "get_weights"):
            raise ConfigError(f"model {name!r} returned {type(model).__name__}, not a Keras model")
        return model
    raise ConfigError(f"unknown model {name!r}; built-in: {sorted(SPECS)} or 'pkg.mod:function'")


def check_compatible(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Fail early, with a clear message, if the model cannot train on this data."""
    try:
        outputs = np.asarray(model(x[:2], training=False))
    except Exception as exc:  # Keras raises many types for a shape mismatch
        raise ConfigError(f"the model does not accept features of shape {x.shape[1:]}: "
                          f"{type(exc).__name__}: {exc}") from None
    if outputs.ndim != 2 or outputs.shape[1] <= int(y.max()):
        raise ConfigError(f"the model outputs {outputs.shape[1:]} per example, but labels go up "
                          f"to {int(y.max())}: it needs one softmax output per class")


def compile_for_training(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def fingerprint(weights: Sequence[np.ndarray]) -> str:
    """A short hash of the weights' shapes and dtypes: updates must match it to be applied."""
    text = ";".join(f"{np.dtype(w.dtype).str}{list(w.shape)}" for w in weights)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


KERAS_EXTRAS = ("sklearn", "matplotlib")  # Keras loads them only for features fedmq never uses


def import_keras() -> None:
    """Import TensorFlow and Keras without the packages Keras imports only for its scikit-learn
    wrappers and its plotting utilities, which it guards with `except ImportError`: 87 MB less
    resident memory in a process that never loads them itself, 26 MB in one that loads a
    built-in data set (docs/benchmarks.md). Both stay
    importable afterwards (the built-in data sets load with scikit-learn); Keras's wrappers
    (`keras.wrappers`) and image galleries stay off in that process, so a task must not use
    them. Call it from the main thread before other threads start (one importing either package
    meanwhile would fail); a no-op once Keras is imported."""
    if "keras" in sys.modules:
        return
    hidden = [name for name in KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def configure_tensorflow(threads: int) -> None:
    """Limit TensorFlow's thread pools (call before the first model is built)."""
    import_keras()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
