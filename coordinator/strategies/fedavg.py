"""FedAvg (McMahan et al. 2017), the synchronous baseline: rounds with a barrier.

A round is one task per participant; the round's models (all of the current version) are
averaged weighted by their example counts once all of them have arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.arrays import Arrays, weighted_mean
from coordinator.strategies.base import Contribution, as_model


@dataclass
class FedAvg:
    """Synchronous rounds: wait for `cohort` models of the same version, average by examples."""

    cohort: int
    name: str = "fedavg"
    wants_delta: bool = False
    synchronous: bool = True
    stepping: bool = False  # (a step outside submit: base.py)
    withheld: int = 0
    models: list[Arrays] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)

    @property
    def buffered(self) -> int:
        return len(self.models)

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None:
        if update.staleness != 0:
            raise ValueError("FedAvg only averages models of the current round")
        self.models.append([np.array(w) for w in as_model(current, update)])
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
