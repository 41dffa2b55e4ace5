"""Central differential privacy over a FedBuff buffer (`--dp-mode central`).

The coordinator is trusted and sees raw deltas. When a buffer is combined, each worker's share of
it (the sum of its staleness-weighted deltas in that buffer) is clipped to C, the shares are
summed, N(0, (z C)^2) is added to every coordinate once, and the sum is divided by the number of
buffered updates. A worker's share changes by at most 2C when its shard is replaced, so each
combined buffer is a Gaussian mechanism with the same multiplier z / 2 for every worker in it,
counted once per buffer it took part in (again without amplification by sampling). The noise is
added once to a sum of K deltas instead of to each, so the aggregate carries sqrt(K) times less
noise than local DP's mean at the same epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from common.arrays import Arrays, clip_by_global_norm
from common.privacy import PrivacyLedger, add_gaussian_noise, noise_std


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
                  workers: Sequence[str]) -> Arrays:
        """(sum over workers of clip(their weighted deltas' sum) + noise) / len(deltas), in the
        deltas' dtypes; counts one release for every worker in the buffer."""
        if not deltas:
            raise ValueError("cannot aggregate an empty buffer")
        shares: dict[str, Arrays] = {}
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
