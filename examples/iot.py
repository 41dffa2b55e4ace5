"""IoT: a fleet of devices that keep their sensor readings, classifying windows of a
three-channel signal (normal, spike, drift, oscillation) with a small 1-D convolutional model.
Each device is a site with its own noise level and its own mix of events (Dirichlet(0.5))."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.learning_task import LearningTask

STEPS, CHANNELS, CLASSES, PER_DEVICE = 64, 3, 4, 300


def windows(labels: np.ndarray, noise: float | np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """One window per label: a base rhythm plus the label's event, plus the device's noise."""
    t = np.linspace(0, 1, STEPS)
    x = np.sin(2 * np.pi * (2 * t[None, :, None] + rng.uniform(0, 1, (len(labels), 1, 3))))
    for i, label in enumerate(labels):
        channel = rng.integers(CHANNELS)
        if label == 1:    # a spike
            x[i, rng.integers(8, STEPS - 8), channel] += 4.0
        elif label == 2:  # a drift
            x[i, :, channel] += 3.0 * t
        elif label == 3:  # an oscillation
            x[i, :, channel] += np.sin(2 * np.pi * 12 * t)
    return (x + rng.normal(0, noise, x.shape)).astype(np.float32)


def device(shard: int, num_shards: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, shard])
    mix = rng.dirichlet(np.full(CLASSES, 0.5))
    labels = rng.choice(CLASSES, PER_DEVICE, p=mix)
    noise = 0.2 + 0.6 * shard / max(1, num_shards - 1)
    return windows(labels, noise, rng), labels.astype(np.int64)


def held_out(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced events over the fleet's whole range of noise."""
    rng = np.random.default_rng([seed, 7777])
    labels = np.repeat(np.arange(CLASSES), 150)
    return windows(labels, rng.uniform(0.2, 0.8, (len(labels), 1, 1)), rng), labels


def _model() -> Any:
    import keras

    return keras.Sequential([keras.Input((STEPS, CHANNELS)),
                             keras.layers.Conv1D(16, 5, activation="relu"),
                             keras.layers.MaxPooling1D(2),
                             keras.layers.Conv1D(16, 5, activation="relu"),
                             keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(CLASSES, activation="softmax")])


def sensor_events() -> LearningTask:
    return LearningTask(build_model=_model, load_data=device, load_eval_data=held_out)
