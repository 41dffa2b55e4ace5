"""Robust aggregation of a buffer of update deltas: pure numpy functions, no broker, no TensorFlow.

Each update is a list of layer arrays (a delta: trained weights minus the model it started from).
Every function returns one aggregated delta with the layers' shapes and dtypes.

- norm bounding (Sun et al. 2019): scale each delta down to a maximum global L2 norm, then average;
- coordinate-wise median and trimmed mean (Yin et al. 2018);
- Krum and multi-Krum (Blanchard et al. 2017): keep the update(s) closest to their n - f - 2
  nearest neighbours; they need n >= 2f + 3 updates to tolerate f Byzantine ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.arrays import Arrays, clip_by_global_norm, flatten, unflatten, weighted_mean
from common.errors import ConfigError
from common.robust_rules import minimum_updates, robust_problem


def _stack(updates: Sequence[Arrays]) -> np.ndarray:
    if not updates:
        raise ValueError("cannot aggregate an empty buffer")
    return np.stack([flatten(u) for u in updates])


def mean(updates: Sequence[Arrays], weights: Sequence[float] | None = None) -> Arrays:
    """Weighted average (plain average without weights)."""
    return weighted_mean(updates, [1.0] * len(updates) if weights is None else weights)


def norm_bounded(updates: Sequence[Arrays], max_norm: float) -> list[Arrays]:
    """Every update scaled down to global L2 norm <= max_norm (shorter ones unchanged)."""
    return [clip_by_global_norm(u, max_norm) for u in updates]


def coordinate_median(updates: Sequence[Arrays]) -> Arrays:
    """Median of every coordinate across updates."""
    return unflatten(np.median(_stack(updates), axis=0), updates[0])


def trimmed_mean(updates: Sequence[Arrays], trim: int) -> Arrays:
    """Per coordinate, drop the `trim` largest and `trim` smallest values, average the rest."""
    n = len(updates)
    if trim < 0 or 2 * trim >= n:
        raise ValueError(f"trimmed mean of {n} updates cannot trim {trim} from each end")
    ordered = np.sort(_stack(updates), axis=0)
    return unflatten(ordered[trim:n - trim].mean(axis=0), updates[0])


def krum_scores(updates: Sequence[Arrays], f: int) -> np.ndarray:
    """Krum score of each update: sum of squared distances to its n - f - 2 nearest others."""
    n = len(updates)
    if f < 0 or n < 2 * f + 3:
        raise ValueError(f"Krum with f={f} needs at least 2f+3 = {2 * f + 3} updates, got {n}")
    matrix = _stack(updates)
    squares = np.sum(matrix ** 2, axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * matrix @ matrix.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, : n - f - 2]
    return np.asarray(nearest.sum(axis=1))


def multi_krum(updates: Sequence[Arrays], f: int, m: int | None = None) -> Arrays:
    """Average of the m updates with the lowest Krum scores (m defaults to n - f)."""
    m = len(updates) - f if m is None else m
    if not 1 <= m <= len(updates):
        raise ValueError(f"multi-Krum cannot select {m} of {len(updates)} updates")
    chosen = np.argsort(krum_scores(updates, f), kind="stable")[:m]
    return mean([updates[i] for i in chosen])


def krum(updates: Sequence[Arrays], f: int) -> Arrays:
    """The single update with the lowest Krum score.

    On fixed local shards Krum tends to settle on one worker: the picked shard gets fitted, its
    next delta is the shortest and so the most central, and it is picked again (measured in
    docs/security.md); multi-Krum, median or trimmed mean do not have that fixed point.
    """
    return multi_krum(updates, f, m=1)


@dataclass(frozen=True)
class RobustConfig:
    """Which rule aggregates a buffer, with its parameters."""

    aggregator: str = "mean"
    byzantine_f: int = 1        # f for Krum / multi-Krum, and trimmed per end for trimmed mean
    norm_bound: float = 0.0     # > 0: clip every delta to this L2 norm before aggregating

    @property
    def is_plain_mean(self) -> bool:
        return self.aggregator == "mean" and self.norm_bound <= 0

    def minimum_updates(self) -> int:
        """The fewest updates the rule can combine: 2f+3 for Krum, 2f+1 for trimmed mean."""
        return minimum_updates(self.aggregator, self.byzantine_f)

    def for_partial_buffer(self, size: int) -> RobustConfig:
        """The rule for an end-of-job buffer of `size` < K: itself, or the coordinate-wise
        median (same norm bound) when the buffer is too small for it."""
        if size >= self.minimum_updates():
            return self
        return RobustConfig("median", self.byzantine_f, self.norm_bound)

    def check(self, buffer_size: int) -> None:
        """Refuse configurations that cannot work for a buffer of `buffer_size` updates."""
        problem = robust_problem(self.aggregator, self.byzantine_f, buffer_size)
        if problem is not None:
            raise ConfigError(problem)

    def aggregate(self, updates: Sequence[Arrays],
                  weights: Sequence[float] | None = None) -> Arrays:
        """Norm-bound (if set), then combine with the chosen rule. Only `mean` uses weights."""
        if self.norm_bound > 0:
            updates = norm_bounded(updates, self.norm_bound)
        if self.aggregator == "mean":
            return mean(updates, weights)
        if self.aggregator == "median":
            return coordinate_median(updates)
        if self.aggregator == "trimmed_mean":
            return trimmed_mean(updates, self.byzantine_f)
        if self.aggregator == "krum":
            return krum(updates, self.byzantine_f)
        if self.aggregator == "multi_krum":
            return multi_krum(updates, self.byzantine_f)
        raise ConfigError(f"unknown aggregator {self.aggregator!r}")
