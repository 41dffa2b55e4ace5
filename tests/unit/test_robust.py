"""Robust aggregation rules on tiny hand-checked vectors, FedBuff with a robust rule, attacks."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from common.messages import WeightUpdate
from common.settings import TrainingSettings
from coordinator.core import CoordinatorCore
from coordinator.strategies import Contribution, FedBuff, robust
from coordinator.strategies.robust import RobustConfig
from worker.attacks import attack_delta


def vec(*values: float) -> list[np.ndarray]:
    """One update of two layers: the first value, then the rest."""
    return [np.array([values[0]], np.float32), np.array(values[1:], np.float32)]


def flat(update: list[np.ndarray]) -> list[float]:
    return [float(v) for v in robust.flatten(update)]


def test_median_and_trimmed_mean_per_coordinate() -> None:
    updates = [vec(1, 10), vec(2, 20), vec(3, 30), vec(4, 40), vec(100, -1000)]
    assert flat(robust.coordinate_median(updates)) == [3.0, 20.0]
    assert flat(robust.trimmed_mean(updates, 1)) == [3.0, 20.0]  # mean of 2,3,4 and 10,20,30
    assert flat(robust.mean(updates[:2], [3.0, 1.0])) == [1.25, 12.5]
    with pytest.raises(ValueError):
        robust.trimmed_mean(updates, 3)


def test_krum_picks_a_central_update_and_multi_krum_averages_the_closest() -> None:
    honest = [vec(1.0, 1.0), vec(1.1, 0.9), vec(0.9, 1.1), vec(1.0, 1.05), vec(1.05, 1.0)]
    attackers = [vec(50.0, -50.0), vec(-40.0, 60.0)]
    updates = honest + attackers
    chosen = flat(robust.krum(updates, f=2))
    assert chosen in [flat(h) for h in honest]
    combined = flat(robust.multi_krum(updates, f=2))  # the 5 honest ones
    assert combined == pytest.approx(flat(robust.mean(honest)), rel=1e-6)
    assert flat(robust.multi_krum(updates, f=2, m=1)) == chosen


def test_krum_refuses_fewer_than_2f_plus_3_updates() -> None:
    updates = [vec(float(i), 0.0) for i in range(6)]
    with pytest.raises(ValueError, match="2f\\+3 = 7"):
        robust.krum(updates, f=2)
    with pytest.raises(ConfigError, match="needs buffer_size >= 2f\\+3 = 7"):
        RobustConfig("multi_krum", byzantine_f=2).check(buffer_size=6)
    RobustConfig("multi_krum", byzantine_f=2).check(buffer_size=7)
    with pytest.raises(ConfigError):
        FedBuff(buffer_size=4, robust=RobustConfig("krum", byzantine_f=1))


def test_norm_bounding_scales_long_updates_down_before_averaging() -> None:
    updates = [vec(3.0, 4.0), vec(0.3, 0.4)]  # norms 5 and 0.5
    bounded = robust.norm_bounded(updates, 1.0)
    assert flat(bounded[0]) == pytest.approx([0.6, 0.8])
    assert flat(bounded[1]) == pytest.approx([0.3, 0.4])
    assert flat(RobustConfig("mean", norm_bound=1.0).aggregate(updates)) == \
        pytest.approx([0.45, 0.6])


def test_fedbuff_with_a_robust_rule_applies_it_once_the_buffer_is_full() -> None:
    strategy = FedBuff(buffer_size=3, robust=RobustConfig("median"))
    current = vec(0.0, 0.0)
    results = [strategy.submit(current, Contribution(vec(v, -v), True, 0, 1))
               for v in (1.0, 2.0, 300.0)]
    assert results[0] is None and results[1] is None
    assert results[2] is not None and flat(results[2]) == [2.0, -2.0]


def test_nan_updates_are_never_applied() -> None:
    # Given a coordinator with a buffered median strategy
    strategy = FedBuff(2, robust=RobustConfig("median"))
    core = CoordinatorCore(weights=vec(0.0, 0.0), strategy=strategy, max_staleness=10,
                           training=TrainingSettings())
    tasks = [core.issue_task().task_id for _ in range(3)]

    def update(task: str, values: list[np.ndarray]) -> WeightUpdate:
        return WeightUpdate(update_id=task, worker_id="w", task_id=task, base_version=0,
                            num_examples=1, train_seconds=0.0, weights=tuple(values),
                            is_delta=True)

    nan = attack_delta(vec(1.0, 1.0), "nan", None, np.random.default_rng(0))
    # When a NaN update arrives, then it is rejected and never reaches the buffer
    outcome = core.handle(update(tasks[0], nan))
    assert outcome.kind == "rejected" and outcome.code == "non_finite"
    assert core.handle(update(tasks[1], vec(1.0, 1.0))).kind == "buffered"
    assert core.handle(update(tasks[2], vec(3.0, 3.0))).kind == "applied"
    assert flat(core.weights) == [2.0, 2.0]
    # And a non-finite aggregate (should one ever happen) is dropped, not applied
    strategy = FedBuff(1, robust=RobustConfig("mean"))
    assert strategy.submit(vec(0.0, 0.0), Contribution(nan, True, 0, 1)) is None
    assert strategy.dropped == 1


def test_attack_modes() -> None:
    rng = np.random.default_rng(0)
    delta = vec(1.0, -2.0)
    assert flat(attack_delta(delta, "sign_flip", None, rng)) == [-10.0, 20.0]
    assert flat(attack_delta(delta, "scale", None, rng)) == [100.0, -200.0]
    random = attack_delta(delta, "random", 3.0, rng)
    assert float(np.linalg.norm(robust.flatten(random))) == pytest.approx(3 * np.sqrt(5),
                                                                          rel=1e-5)
    assert all(np.isnan(a).all() for a in attack_delta(delta, "nan", None, rng))
    assert flat(attack_delta(delta, "none", None, rng)) == [1.0, -2.0]


def test_a_last_buffer_too_small_for_krum_is_combined_by_the_median() -> None:
    strategy = FedBuff(buffer_size=5, robust=RobustConfig("krum", byzantine_f=1))
    current = vec(0.0, 0.0)
    for v in (1.0, 2.0, 300.0):
        assert strategy.submit(current, Contribution(vec(v, v), True, 0, 1)) is None
    flushed = strategy.flush(current)
    assert flushed is not None and flat(flushed) == [2.0, 2.0]
