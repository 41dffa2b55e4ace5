"""Aggregation math as pure functions over lists of numpy arrays: no broker, no TensorFlow, no I/O.

Staleness t = current_version - base_version.
- FedAsync (Xie, Koyejo, Gupta 2019) mixes each update into the global model with weight
  alpha * s(t).
- FedBuff (Nguyen et al. 2022) buffers K deltas, weights each by 1/sqrt(1+t) (optionally times its
  example count) and moves the model by server_lr times their weighted mean (with optional server
  momentum).
- FedAvg (McMahan et al. 2017) is the synchronous baseline: a round of one task per participant,
  a barrier, and the example-weighted average of the round's models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from common.privacy import CentralNoise
from coordinator.robust import RobustConfig

log = logging.getLogger("fedmq.coordinator")
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


def fedbuff_staleness_weight(t: int) -> float:
    """FedBuff's down-weighting of stale deltas: 1 / sqrt(1 + t)."""
    return 1.0 / math.sqrt(1.0 + t)


def apply_delta(current: Sequence[np.ndarray], delta: Sequence[np.ndarray],
                server_lr: float) -> Arrays:
    """current + server_lr * delta, keeping each layer's dtype."""
    return [(c + server_lr * d).astype(c.dtype, copy=False)
            for c, d in zip(current, delta, strict=True)]


@dataclass(frozen=True)
class Contribution:
    """What a strategy needs to know about one validated update."""

    weights: Sequence[np.ndarray]
    is_delta: bool
    staleness: int
    num_examples: int
    worker_id: str = ""


class Strategy(Protocol):
    """Folds validated updates into the global model.

    `submit` returns the new global weights when the model changed (the coordinator then bumps the
    version and broadcasts), or None when the update was only buffered. `buffered` counts updates
    held but not yet in the model; `wants_delta` asks workers for trained - base instead of the
    trained weights; `synchronous` strategies get a new round of tasks only after the last one.
    """

    name: str
    wants_delta: bool
    synchronous: bool

    @property
    def buffered(self) -> int: ...

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None: ...

    def flush(self, current: Arrays) -> Arrays | None:
        """At the end of a job: fold in whatever is still buffered (None if nothing is)."""
        ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class FedAsync:
    """Apply every update at once, weighted by alpha * s(staleness)."""

    alpha: float
    staleness_fn: StalenessFn
    name: str = "fedasync"
    wants_delta: bool = False
    synchronous: bool = False

    @property
    def buffered(self) -> int:
        return 0

    def submit(self, current: Arrays, update: Contribution) -> Arrays:
        new = update.weights
        if update.is_delta:
            new = [c + d for c, d in zip(current, update.weights, strict=True)]
        return fedasync_step(current, new, self.alpha, update.staleness, self.staleness_fn)

    def flush(self, current: Arrays) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class FedBuff:
    """Buffer K deltas; flush x <- x + lr * (m v + sum w_i d_i / sum w_i) with w_i = 1/sqrt(1+t)."""

    buffer_size: int
    server_lr: float = 1.0
    momentum: float = 0.0
    weight_by_examples: bool = False
    name: str = "fedbuff"
    wants_delta: bool = True
    synchronous: bool = False
    deltas: list[Arrays] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    velocity: Arrays | None = None
    robust: RobustConfig | None = None  # a robust rule (coordinator/robust.py) instead of the mean
    dropped: int = 0                    # buffers whose aggregate was not finite
    central: CentralNoise | None = None  # central DP instead of the mean (common/privacy.py)
    workers: list[str] = field(default_factory=list)  # who sent each buffered delta
    withheld: int = 0                   # buffers not applied: the privacy budget

    def __post_init__(self) -> None:
        if self.robust is not None:
            self.robust.check(self.buffer_size)
        if self.robust is not None and self.central is not None:
            raise ValueError("central DP combines a buffer by its noised mean: no robust rule")

    @property
    def buffered(self) -> int:
        return len(self.deltas)

    def _combine(self) -> Arrays:
        if self.central is not None:
            return self.central.aggregate(self.deltas, self.weights, self.workers)
        if self.robust is None:
            return weighted_mean(self.deltas, self.weights)
        rule = self.robust.for_partial_buffer(len(self.deltas))
        if rule is not self.robust:
            log.warning("last buffer holds %d updates, too few for %s; using the median",
                        len(self.deltas), self.robust.aggregator)
        return rule.aggregate(self.deltas, self.weights)

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None:
        if not update.is_delta:
            raise ValueError("FedBuff needs deltas (trained - base weights)")
        weight = fedbuff_staleness_weight(update.staleness)
        if self.weight_by_examples:
            weight *= update.num_examples
        self.deltas.append([np.array(d) for d in update.weights])
        self.weights.append(weight)
        self.workers.append(update.worker_id)
        if len(self.deltas) < self.buffer_size:
            return None
        return self.flush(current)

    def flush(self, current: Arrays) -> Arrays | None:
        if not self.deltas:
            return None
        exceeding = None if self.central is None else self.central.over_budget(self.workers)
        if exceeding is not None:  # never spend past the budget, not even for a last buffer
            self.withheld += 1
            log.warning("buffer of %d updates not applied: it would bring the epsilon of %s to "
                        "%.3f, over the privacy budget", len(self.deltas), *exceeding)
            self._empty()
            return None
        step = self._combine()
        if not all(np.isfinite(a).all() for a in step):  # never apply NaN or Inf
            self.dropped += 1
            log.error("aggregate of %d buffered updates is not finite; dropped", len(self.deltas))
            self._empty()
            return None
        if self.momentum > 0:
            self.velocity = step if self.velocity is None else [
                self.momentum * v + s for v, s in zip(self.velocity, step, strict=True)]
            step = self.velocity
        self._empty()
        return apply_delta(current, step, self.server_lr)

    def _empty(self) -> None:
        self.deltas, self.weights, self.workers = [], [], []

    def state(self) -> dict[str, Any]:
        return {"deltas": self.deltas, "weights": self.weights, "velocity": self.velocity,
                "dropped": self.dropped, "workers": self.workers, "withheld": self.withheld}

    def load_state(self, state: dict[str, Any]) -> None:
        self.deltas = [list(d) for d in state["deltas"]]
        self.weights = [float(w) for w in state["weights"]]
        self.velocity = None if state["velocity"] is None else list(state["velocity"])
        self.dropped = int(state.get("dropped", 0))
        self.workers = [str(w) for w in state.get("workers", [""] * len(self.deltas))]
        self.withheld = int(state.get("withheld", 0))


@dataclass
class FedAvg:
    """Synchronous rounds: wait for `cohort` models of the same version, average by examples."""

    cohort: int
    name: str = "fedavg"
    wants_delta: bool = False
    synchronous: bool = True
    models: list[Arrays] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)

    @property
    def buffered(self) -> int:
        return len(self.models)

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None:
        if update.staleness != 0:
            raise ValueError("FedAvg only averages models of the current round")
        new = update.weights
        if update.is_delta:
            new = [c + d for c, d in zip(current, update.weights, strict=True)]
        self.models.append([np.array(w) for w in new])
        self.examples.append(update.num_examples)
        if len(self.models) < self.cohort:
            return None
        return self.flush(current)

    def flush(self, current: Arrays) -> Arrays | None:
        if not self.models:
            return None
        average = weighted_mean(self.models, [float(n) for n in self.examples])
        self.models, self.examples = [], []
        return average

    def state(self) -> dict[str, Any]:
        return {"models": self.models, "examples": self.examples}

    def load_state(self, state: dict[str, Any]) -> None:
        self.models = [list(m) for m in state["models"]]
        self.examples = [int(n) for n in state["examples"]]
