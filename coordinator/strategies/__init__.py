"""Aggregation strategies, one file per behaviour, over the shared base (base.py).

- staleness.py: the staleness functions s(t) and FedBuff's 1/sqrt(1+t);
- fedasync.py: FedAsync, every update mixed in at once;
- fedbuff.py: FedBuff, K deltas buffered, then one step (robust rules or central DP optional);
- fedavg.py: synchronous FedAvg rounds, the baseline;
- robust.py: robust rules over a buffer (norm bound, median, trimmed mean, Krum, multi-Krum);
- central_dp.py: central differential privacy over a buffer (clip shares, noise the sum once);
- server_optimizer.py: FedOpt (Adam, Yogi, Adagrad) on FedBuff's aggregated delta.
- secure_fedbuff.py: FedBuff over masked shares, each buffer unmasked by the helper's sum.

`make_strategy` builds the one a coordinator's settings name.
"""

from __future__ import annotations

from common import privacy
from common.settings import CoordinatorSettings
from coordinator.strategies.base import Contribution, Strategy
from coordinator.strategies.central_dp import CentralNoise
from coordinator.strategies.fedasync import FedAsync, fedasync_step, mix
from coordinator.strategies.fedavg import FedAvg
from coordinator.strategies.fedbuff import FedBuff
from coordinator.strategies.robust import RobustConfig
from coordinator.strategies.secure_fedbuff import SecureFedBuff
from coordinator.strategies.server_optimizer import ServerOptimizer
from coordinator.strategies.staleness import (
    StalenessFn,
    fedbuff_staleness_weight,
    make_staleness,
    staleness_constant,
    staleness_hinge,
    staleness_polynomial,
)

__all__ = ["CentralNoise", "Contribution", "FedAsync", "FedAvg", "FedBuff", "RobustConfig",
           "SecureFedBuff", "StalenessFn", "Strategy", "fedasync_step",
           "fedbuff_staleness_weight", "make_staleness", "make_strategy", "mix",
           "staleness_constant", "staleness_hinge", "staleness_polynomial"]


def make_strategy(settings: CoordinatorSettings,
                  ledger: privacy.PrivacyLedger | None = None) -> Strategy:
    """The configured strategy; central DP spends from `ledger` (the coordinator's admission)."""
    if settings.strategy == "fedbuff" and settings.secure_aggregation:
        return SecureFedBuff(settings.buffer_size, settings.secure_clip,
                             settings.secure_weight_resolution, settings.server_lr,
                             settings.server_momentum)
    if settings.strategy == "fedbuff":
        robust = RobustConfig(settings.aggregator, settings.byzantine_f, settings.norm_bound)
        central = None
        if settings.dp_mode == "central":
            if ledger is None:
                raise ValueError("central DP needs a privacy ledger")
            central = CentralNoise(settings.dp_clip_norm, settings.dp_noise_multiplier,
                                           ledger)
        return FedBuff(buffer_size=settings.buffer_size, server_lr=settings.server_lr,
                       momentum=settings.server_momentum,
                       weight_by_examples=settings.weight_by_examples,
                       robust=None if robust.is_plain_mean else robust, central=central,
                       optimizer=None if settings.server_optimizer == "sgd" else ServerOptimizer(
                           settings.server_optimizer, settings.server_beta1,
                           settings.server_beta2, settings.server_tau))
    if settings.strategy == "fedavg":
        return FedAvg(cohort=settings.concurrency)
    staleness = make_staleness(settings.staleness, settings.staleness_a, settings.staleness_b)
    return FedAsync(alpha=settings.alpha, staleness_fn=staleness)
