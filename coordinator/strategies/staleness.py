"""Staleness functions: how much less an update counts the more versions old its base is.

Staleness t = current_version - base_version. FedAsync scales its mixing weight by s(t)
(Xie, Koyejo, Gupta 2019); FedBuff weights each buffered delta by 1/sqrt(1+t) (Nguyen et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


def fedbuff_staleness_weight(t: int) -> float:
    """FedBuff's down-weighting of stale deltas: 1 / sqrt(1 + t)."""
    return 1.0 / math.sqrt(1.0 + t)
