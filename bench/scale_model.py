"""Models of a chosen size for `fedmq bench scale`: Dense stacks of 32 inputs and 10 classes.

The coordinator builds them with Keras (`--model bench.scale_model:mlp_4mb`); simulated workers
need only their layer shapes (`shapes`), so they never import TensorFlow. `held_out` writes the
coordinator's evaluation data (random features, random labels: the bench measures throughput,
not accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUTS, CLASSES = 32, 10
# name -> hidden layer widths; float32 parameters: 20 KB, 4 MB, 40 MB, 400 MB, and 1 GB
# (250.2M parameters in 17 layers, the largest 67 MB: many layers, as real models of that size
# have, rather than two of 500 MB); "200mb" has four of the 1 GB model's 66.7 MB layers (50.1M
# parameters), to try out its memory profile in a few minutes
HIDDEN: dict[str, tuple[int, ...]] = {
    "20kb": (118,), "4mb": (980, 980), "40mb": (3140, 3140), "400mb": (9980, 9980),
    "200mb": (4082,) * 4, "1gb": (4082,) * 16,
}


def shapes(size: str) -> list[tuple[int, ...]]:
    """(kernel, bias) shapes of every Dense layer, in Keras's get_weights order."""
    widths = [INPUTS, *HIDDEN[size], CLASSES]
    out: list[tuple[int, ...]] = []
    for a, b in zip(widths, widths[1:], strict=False):
        out += [(a, b), (b,)]
    return out


def model_bytes(size: str) -> int:
    return 4 * sum(int(np.prod(shape)) for shape in shapes(size))


def build(size: str) -> Any:
    import keras

    layers: list[Any] = [keras.Input((INPUTS,), name="features")]
    for index, width in enumerate(HIDDEN[size]):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"hidden{index}"))
    layers.append(keras.layers.Dense(CLASSES, activation="softmax", name="output"))
    return keras.Sequential(layers)


def mlp_20kb() -> Any:
    return build("20kb")


def mlp_4mb() -> Any:
    return build("4mb")


def mlp_40mb() -> Any:
    return build("40mb")


def mlp_400mb() -> Any:
    return build("400mb")


def mlp_200mb() -> Any:
    return build("200mb")


def mlp_1gb() -> Any:
    return build("1gb")


def spec(size: str) -> str:
    """The --model value of `size`."""
    return f"bench.scale_model:mlp_{size}"


def held_out(path: Path, examples: int = 256, seed: int = 0) -> Path:
    """An .npz of `examples` random feature rows and labels (the coordinator's eval data)."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(examples, INPUTS)).astype(np.float32),
             y=rng.integers(0, CLASSES, examples))
    return path
