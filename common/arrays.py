"""Math over a model's weights as a list of numpy arrays (one per layer): the one copy of it.

Norms, clipping, weighted means, deltas and flattening are used by the strategies, the robust
rules, differential privacy, the worker's update shaping and the benches alike. Pure functions:
no broker, no TensorFlow, no I/O. Every function keeps each layer's shape and dtype; sums are
accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Arrays = list[np.ndarray]
"""A model's weights, or a delta of them: one array per layer."""


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    """L2 norm of all arrays taken together (in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def clip_by_global_norm(arrays: Sequence[np.ndarray], clip: float) -> Arrays:
    """Scale the arrays down so their global L2 norm is at most `clip`; shorter ones unchanged."""
    if clip <= 0:
        raise ValueError(f"clip norm must be positive, got {clip}")
    norm = global_norm(arrays)
    if norm <= clip:
        return [np.array(a, copy=True) for a in arrays]
    scale = clip / norm
    return [(np.asarray(a, dtype=np.float64) * scale).astype(a.dtype) for a in arrays]


def weighted_mean(arrays: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> Arrays:
    """sum_i w_i * arrays_i / sum_i w_i, layer by layer (float64 accumulation, dtype kept)."""
    total = float(sum(weights))
    if not arrays or total <= 0:
        raise ValueError("weighted_mean needs at least one array list and a positive weight")
    result = []
    for layer in range(len(arrays[0])):
        acc = np.zeros(arrays[0][layer].shape, dtype=np.float64)
        for a, w in zip(arrays, weights, strict=True):
            acc += w * np.asarray(a[layer], dtype=np.float64)
        result.append((acc / total).astype(arrays[0][layer].dtype))
    return result


def difference(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> Arrays:
    """new - old, layer by layer (a delta)."""
    return [np.asarray(n) - np.asarray(o) for n, o in zip(new, old, strict=True)]


def add_scaled(current: Sequence[np.ndarray], delta: Sequence[np.ndarray],
               scale: float = 1.0) -> Arrays:
    """current + scale * delta, keeping each layer of `current`'s dtype."""
    return [(c + scale * d).astype(c.dtype, copy=False)
            for c, d in zip(current, delta, strict=True)]


def all_finite(arrays: Sequence[np.ndarray]) -> bool:
    """True when no array holds NaN or Inf."""
    return all(finite(a) for a in arrays)


def finite(array: np.ndarray) -> bool:
    """True when `array` holds no NaN or Inf. NaN and Inf carry through a sum (Inf - Inf is
    NaN), so a finite sum proves every value finite in one pass with no temporary array; only
    a sum that is not finite (a NaN, an Inf, or finite values whose sum overflows) takes the
    elementwise check. Integer and boolean arrays are always finite."""
    if array.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(array, axis=None)
    return bool(np.isfinite(total)) or bool(np.isfinite(array).all())


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All layers as one float64 vector."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> Arrays:
    """Cut a vector back into arrays shaped and typed like `like`."""
    out, start = [], 0
    for layer in like:
        out.append(vector[start:start + layer.size].reshape(layer.shape).astype(layer.dtype))
        start += layer.size
    return out
