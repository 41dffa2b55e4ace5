"""A model for the digits data with another architecture than digits_mlp (a narrower hidden
layer): what a worker started with the wrong --model trains."""

from __future__ import annotations

from typing import Any


def narrow_digits_mlp() -> Any:
    import keras

    return keras.Sequential([
        keras.Input((64,), name="features"),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="output"),
    ])
