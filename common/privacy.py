"""Differential privacy of updates: L2 clipping, Gaussian noise, and the epsilon they cost.

Local DP (the default, `--dp-mode local`): a worker clips the delta of each update
(trained - base) to global L2 norm C and adds N(0, (z C)^2) to every coordinate before the update
leaves the machine. Two neighbouring shards (one example, or the whole shard, replaced) give
deltas that differ by at most 2C after clipping, so each update is a Gaussian mechanism with noise
multiplier z / 2 relative to its sensitivity. A worker's updates are composed with Google's
`dp-accounting` RDP accountant; no amplification by sampling is assumed (each task trains on the
whole shard and every update a worker sends is counted, whether or not the coordinator applies
it).

Central DP (`--dp-mode central`) is the coordinator's (coordinator/strategies/central_dp.py); it
spends from the same `PrivacyLedger`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from common.arrays import Arrays, clip_by_global_norm

SENSITIVITY_FACTOR = 2.0  # replace-one adjacency: two clipped deltas differ by at most 2C


def add_gaussian_noise(arrays: Sequence[np.ndarray], std: float,
                       rng: np.random.Generator) -> Arrays:
    """Each coordinate plus independent N(0, std^2), keeping dtypes."""
    return [(a + rng.normal(0.0, std, size=a.shape)).astype(a.dtype) for a in arrays]


def noise_std(clip: float, noise_multiplier: float) -> float:
    """The calibrated standard deviation: noise multiplier times the clip norm."""
    return noise_multiplier * clip


def privatize(delta: Sequence[np.ndarray], clip: float, noise_multiplier: float,
              rng: np.random.Generator) -> Arrays:
    """Clip to `clip`, then add Gaussian noise of std noise_multiplier * clip (if positive)."""
    clipped = clip_by_global_norm(delta, clip)
    if noise_multiplier <= 0:
        return clipped
    return add_gaussian_noise(clipped, noise_std(clip, noise_multiplier), rng)


@lru_cache(maxsize=4096)
def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon after `releases` updates of one worker at `delta` (RDP accountant, no sampling)."""
    if releases <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(noise_multiplier / SENSITIVITY_FACTOR)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, releases))
    return float(accountant.get_epsilon(delta))


@dataclass
class PrivacyLedger:
    """Per-worker count of released updates and the epsilon it implies."""

    noise_multiplier: float
    delta: float
    budget: float | None = None
    releases: Counter[str] = field(default_factory=Counter)

    def epsilon_of(self, worker: str, extra: int = 0) -> float:
        return epsilon(self.noise_multiplier, self.releases[worker] + extra, self.delta)

    def record(self, worker: str) -> float:
        """Count one more update of `worker`; returns its epsilon now."""
        self.releases[worker] += 1
        return self.epsilon_of(worker)

    def worst(self) -> tuple[str, float]:
        """The worker that has spent most, and its epsilon (('', 0) before any update)."""
        if not self.releases:
            return "", 0.0
        name = max(self.releases, key=lambda w: self.releases[w])
        return name, self.epsilon_of(name)

    def next_exceeds(self, worker: str | None = None) -> tuple[str, float] | None:
        """(worker, epsilon) if one more update (of `worker`, or of the busiest worker) would
        exceed the budget, else None."""
        if self.budget is None:
            return None
        name = worker if worker is not None else self.worst()[0]
        spent = self.epsilon_of(name, extra=1)
        return (name or "any worker", spent) if spent > self.budget else None
