"""Aggregation math as pure functions over lists of numpy arrays: no broker, no TensorFlow, no I/O.

Staleness t = current_version - base_version. FedAsync (Xie, Koyejo, Gupta 2019) mixes each update
into the global model with weight alpha * s(t).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Arrays = list[np.ndarray]
StalenessFn = Callable[[int], float]


def staleness_constant(t: int) -> float:
    return 1.0


def staleness_polynomial(t: int, a: float) -> float:
    """s(t) = (t + 1)^-a."""
    return float((t + 1) ** -a)


def staleness_hinge(t: int, a: float, b: int) -> float:
    """s(t) = 1 if t <= b else 1 / (a (t - b) + 1)."""
    return 1.0 if t <= b else 1.0 / (a * (t - b) + 1.0)


def make_staleness(kind: str, a: float = 0.5, b: int = 4) -> StalenessFn:
    """The staleness function named `kind` with its parameters bound."""
    if kind == "constant":
        return staleness_constant
    if kind == "polynomial":
        return lambda t: staleness_polynomial(t, a)
    if kind == "hinge":
        return lambda t: staleness_hinge(t, a, b)
    raise ValueError(f"unknown staleness function {kind!r}")


def mix(current: Sequence[np.ndarray], new: Sequence[np.ndarray], weight: float) -> Arrays:
    """(1 - weight) * current + weight * new, layer by layer, keeping each layer's dtype."""
    return [((1.0 - weight) * c + weight * n).astype(c.dtype, copy=False)
            for c, n in zip(current, new, strict=True)]


def fedasync_step(current: Sequence[np.ndarray], new: Sequence[np.ndarray], alpha: float,
                  staleness: int, s: StalenessFn) -> Arrays:
    """One FedAsync update: x <- (1 - alpha_t) x + alpha_t x_new with alpha_t = alpha * s(t)."""
    return mix(current, new, alpha * s(staleness))


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    """L2 norm of all arrays taken together."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


@dataclass(frozen=True)
class Contribution:
    """What a strategy needs to know about one validated update."""

    weights: Sequence[np.ndarray]
    is_delta: bool
    staleness: int
    num_examples: int


class Strategy(Protocol):
    """Folds validated updates into the global model.

    `submit` returns the new global weights when the model changed (the coordinator then bumps the
    version and broadcasts), or None when the update was only buffered.
    """

    name: str

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class FedAsync:
    """Apply every update at once, weighted by alpha * s(staleness)."""

    alpha: float
    staleness_fn: StalenessFn
    name: str = "fedasync"

    def submit(self, current: Arrays, update: Contribution) -> Arrays:
        new = update.weights
        if update.is_delta:
            new = [c + d for c, d in zip(current, update.weights, strict=True)]
        return fedasync_step(current, new, self.alpha, update.staleness, self.staleness_fn)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None
