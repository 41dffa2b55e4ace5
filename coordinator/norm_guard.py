"""The norm bound on updates (issue 14 item 2): pure math, no broker.

An update's size is the global L2 norm of its delta: the update itself when it is a delta, the
update minus the current global weights when it is full weights. The bound adapts to the job:
`factor` x the median norm of the last `WINDOW` accepted updates; before `MIN_HISTORY` updates
were accepted it is `factor` x a reference norm known at the start (the model's own norm, or
the norm local differential privacy's noise gives a delta if that is larger). A factor of 0
switches the bound off.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from common.arrays import difference, global_norm

WINDOW = 50       # accepted norms the median is taken over
MIN_HISTORY = 5   # accepted norms needed before the median replaces the reference norm


def update_norm(weights: Sequence[np.ndarray], is_delta: bool,
                current: Sequence[np.ndarray]) -> float:
    """Global L2 norm of the update's delta against the current global weights."""
    return global_norm(weights if is_delta else difference(weights, current))


def norm_bound(history: Sequence[float], factor: float, reference: float) -> float:
    """factor x median(history) once it holds MIN_HISTORY norms, else factor x reference;
    infinite when factor is 0 (no bound)."""
    if factor <= 0:
        return math.inf
    if len(history) >= MIN_HISTORY:
        return factor * statistics.median(history[-WINDOW:])
    return factor * reference


def reference_norm(weights: Sequence[np.ndarray], dp_clip_norm: float = 0.0,
                   dp_noise_multiplier: float = 0.0) -> float:
    """The start's yardstick: the model's norm, or a locally noised delta's expected norm
    (clip x (1 + multiplier x sqrt(parameters))) when that is larger."""
    params = sum(int(np.size(w)) for w in weights)
    noised = dp_clip_norm * (1.0 + dp_noise_multiplier * math.sqrt(params))
    return max(global_norm(weights), noised)


@dataclass
class NormGuard:
    """The bound's state: the last accepted norms (checkpointed) and the start's reference."""

    factor: float
    reference: float
    history: list[float] = field(default_factory=list)
    max_ratio: float = 0.0  # largest accepted norm / bound at the time (headroom, for the summary)

    @property
    def bound(self) -> float:
        return norm_bound(self.history, self.factor, self.reference)

    def exceeded(self, norm: float) -> str | None:
        """Why an update of this norm is refused, or None."""
        bound = self.bound
        if not math.isfinite(norm) or norm > bound:
            basis = (f"{self.factor:g} x median {statistics.median(self.history[-WINDOW:]):.4g} "
                     f"of the last {len(self.history[-WINDOW:])} accepted"
                     if len(self.history) >= MIN_HISTORY
                     else f"{self.factor:g} x reference norm {self.reference:.4g}")
            return f"update norm {norm:.4g} exceeds the bound {bound:.4g} ({basis})"
        return None

    def accept(self, norm: float) -> None:
        bound = self.bound
        if math.isfinite(bound) and bound > 0:
            self.max_ratio = max(self.max_ratio, norm / bound)
        self.history = [*self.history, norm][-WINDOW:]

    def state(self) -> dict[str, object]:
        return {"history": np.asarray(self.history, dtype=np.float64),
                "reference": self.reference, "max_ratio": self.max_ratio}

    def load_state(self, state: dict[str, object]) -> None:
        self.history = [float(x) for x in np.asarray(state["history"]).ravel()]
        self.reference = float(state["reference"])  # type: ignore[arg-type]
        self.max_ratio = float(state.get("max_ratio", 0.0))  # type: ignore[arg-type]
