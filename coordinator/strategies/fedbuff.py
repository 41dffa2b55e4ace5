"""FedBuff (Nguyen et al. 2022): buffer K deltas, then take one step with their weighted mean.

Each delta is weighted by 1/sqrt(1+t) (times its example count if configured); the step is
x <- x + server_lr * (momentum * v + sum w_i d_i / sum w_i). The buffer is what makes robust rules
(robust.py) and central differential privacy (central_dp.py) possible: either
replaces the weighted mean. A server optimizer (server_optimizer.py: Adam, Yogi, Adagrad) may
replace the momentum step, taking the buffer's mean as its pseudo-gradient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.arrays import Arrays, add_scaled, all_finite, weighted_mean
from coordinator.strategies.base import Contribution
from coordinator.strategies.central_dp import CentralNoise
from coordinator.strategies.robust import RobustConfig
from coordinator.strategies.server_optimizer import ServerOptimizer
from coordinator.strategies.staleness import fedbuff_staleness_weight

log = logging.getLogger("fedmq.coordinator")


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
    stepping: bool = False  # (a step outside submit: base.py)
    deltas: list[Arrays] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    velocity: Arrays | None = None
    robust: RobustConfig | None = None  # a robust rule (robust.py) instead of the mean
    dropped: int = 0                    # buffers whose aggregate was not finite
    central: CentralNoise | None = None  # central DP instead of the mean (central_dp.py)
    workers: list[str] = field(default_factory=list)  # who sent each buffered delta
    withheld: int = 0                   # buffers not applied: the privacy budget
    optimizer: ServerOptimizer | None = None  # FedOpt instead of momentum (server_optimizer.py)

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
        if not all_finite(step):  # never apply NaN or Inf
            self.dropped += 1
            log.error("aggregate of %d buffered updates is not finite; dropped", len(self.deltas))
            self._empty()
            return None
        if self.optimizer is not None:
            step = self.optimizer.step(step)
        elif self.momentum > 0:
            self.velocity = step if self.velocity is None else [
                self.momentum * v + s for v, s in zip(self.velocity, step, strict=True)]
            step = self.velocity
        self._empty()
        return add_scaled(current, step, self.server_lr)

    def _empty(self) -> None:
        self.deltas, self.weights, self.workers = [], [], []

    def state(self) -> dict[str, Any]:
        return {"deltas": self.deltas, "weights": self.weights, "velocity": self.velocity,
                "dropped": self.dropped, "workers": self.workers, "withheld": self.withheld,
                "optimizer": None if self.optimizer is None else self.optimizer.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.deltas = [list(d) for d in state["deltas"]]
        self.weights = [float(w) for w in state["weights"]]
        self.velocity = None if state["velocity"] is None else list(state["velocity"])
        self.dropped = int(state.get("dropped", 0))
        self.workers = [str(w) for w in state.get("workers", [""] * len(self.deltas))]
        self.withheld = int(state.get("withheld", 0))
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state(state["optimizer"])
