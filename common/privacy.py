"""Differential privacy of updates: L2 clipping, Gaussian noise, and the epsilon they cost.

Local DP (the default, `--dp-mode local`): a worker clips the delta of each update
(trained - base) to global L2 norm C and adds N(0, (z C)^2) to every coordinate before the update
leaves the machine. Two neighbouring shards (one example, or the whole shard, replaced) give
deltas that differ by at most 2C after clipping, so each update is a Gaussian mechanism with noise
multiplier z / 2 relative to its sensitivity. A worker's updates are composed with Google's
`dp-accounting` RDP accountant; no amplification by sampling is assumed (each task trains on the
whole shard and every update a worker sends is counted, whether or not the coordinator applies
it).

Central DP (`--dp-mode central`, `CentralNoise`, FedBuff only; the coordinator is trusted and
sees raw deltas): when a buffer is combined, each worker's share of it (the sum of its
staleness-weighted deltas in that buffer) is clipped to C, the shares are summed, N(0, (z C)^2)
is added to every coordinate once, and the sum is divided by the number of buffered updates. A
worker's share changes by at most 2C when its shard is replaced, so each combined buffer is a
Gaussian mechanism with the same multiplier z / 2 for every worker in it, counted once per buffer
it took part in (again without amplification by sampling). The noise is added once to a sum of K
deltas instead of to each, so the aggregate carries sqrt(K) times less noise than local DP's mean
at the same epsilon.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

SENSITIVITY_FACTOR = 2.0  # replace-one adjacency: two clipped deltas differ by at most 2C


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    """L2 norm of all arrays taken together (in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def clip_by_global_norm(arrays: Sequence[np.ndarray], clip: float) -> list[np.ndarray]:
    """Scale the arrays down so their global L2 norm is at most `clip`; shorter ones unchanged."""
    if clip <= 0:
        raise ValueError(f"clip norm must be positive, got {clip}")
    norm = global_norm(arrays)
    if norm <= clip:
        return [np.array(a, copy=True) for a in arrays]
    scale = clip / norm
    return [(np.asarray(a, dtype=np.float64) * scale).astype(a.dtype) for a in arrays]


def add_gaussian_noise(arrays: Sequence[np.ndarray], std: float,
                       rng: np.random.Generator) -> list[np.ndarray]:
    """Each coordinate plus independent N(0, std^2), keeping dtypes."""
    return [(a + rng.normal(0.0, std, size=a.shape)).astype(a.dtype) for a in arrays]


def noise_std(clip: float, noise_multiplier: float) -> float:
    """The calibrated standard deviation: noise multiplier times the clip norm."""
    return noise_multiplier * clip


def privatize(delta: Sequence[np.ndarray], clip: float, noise_multiplier: float,
              rng: np.random.Generator) -> list[np.ndarray]:
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


@dataclass
class CentralNoise:
    """Central DP over a buffer of deltas: clip each worker's share, sum, noise once, average."""

    clip: float
    noise_multiplier: float
    ledger: PrivacyLedger
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def over_budget(self, workers: Sequence[str]) -> tuple[str, float] | None:
        """(worker, epsilon) if combining a buffer with these workers would take one of them
        past the budget, else None."""
        for worker in sorted(set(workers)):
            exceeding = self.ledger.next_exceeds(worker)
            if exceeding is not None:
                return exceeding
        return None

    def aggregate(self, deltas: Sequence[Sequence[np.ndarray]], weights: Sequence[float],
                  workers: Sequence[str]) -> list[np.ndarray]:
        """(sum over workers of clip(their weighted deltas' sum) + noise) / len(deltas), in the
        deltas' dtypes; counts one release for every worker in the buffer."""
        if not deltas:
            raise ValueError("cannot aggregate an empty buffer")
        shares: dict[str, list[np.ndarray]] = {}
        for delta, weight, worker in zip(deltas, weights, workers, strict=True):
            scaled = [weight * np.asarray(a, dtype=np.float64) for a in delta]
            held = shares.get(worker)
            shares[worker] = scaled if held is None else [
                h + s for h, s in zip(held, scaled, strict=True)]
        clipped = [clip_by_global_norm(share, self.clip) for share in shares.values()]
        total = [np.sum(layer, axis=0) for layer in zip(*clipped, strict=True)]
        noised = add_gaussian_noise(total, noise_std(self.clip, self.noise_multiplier), self.rng)
        for worker in shares:
            self.ledger.record(worker)
        return [(n / len(deltas)).astype(d.dtype) for n, d in zip(noised, deltas[0], strict=True)]
