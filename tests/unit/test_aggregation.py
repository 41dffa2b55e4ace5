"""Aggregation strategies against hand-computed values, and their properties (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.arrays import weighted_mean
from coordinator.strategies import (
    Contribution,
    FedAsync,
    FedAvg,
    FedBuff,
    fedasync_step,
    fedbuff_staleness_weight,
    make_staleness,
    staleness_constant,
    staleness_hinge,
    staleness_polynomial,
)


def arrays(*values: list[float]) -> list[np.ndarray]:
    return [np.array(v, dtype=np.float32) for v in values]


def close(left: list[np.ndarray], right: list[np.ndarray]) -> bool:
    return all(np.allclose(a, b, atol=1e-6) for a, b in zip(left, right, strict=True))


# ---------------------------------------------------------------- hand-computed values

@pytest.mark.parametrize(("t", "expected"), [(0, 1.0), (3, 0.5), (8, 1 / 3)])
def test_polynomial_staleness(t: int, expected: float) -> None:
    assert staleness_polynomial(t, 0.5) == pytest.approx(expected)


@pytest.mark.parametrize(("t", "expected"), [(0, 1.0), (4, 1.0), (6, 0.5), (12, 0.2)])
def test_hinge_staleness(t: int, expected: float) -> None:
    assert staleness_hinge(t, 0.5, 4) == pytest.approx(expected)


def test_constant_staleness_ignores_staleness() -> None:
    assert staleness_constant(0) == staleness_constant(1000) == 1.0


def test_fedasync_step_by_hand() -> None:
    # Given x = [1, 2], x_new = [3, 6], alpha = 0.6, polynomial a = 0.5 at staleness 3
    # Then alpha_t = 0.3 and x' = 0.7 x + 0.3 x_new = [1.6, 3.2]
    result = fedasync_step(arrays([1, 2]), arrays([3, 6]), 0.6, 3, make_staleness("polynomial"))
    assert close(result, arrays([1.6, 3.2]))
    assert result[0].dtype == np.float32


def test_fedasync_with_a_delta_mixes_current_plus_delta() -> None:
    strategy = FedAsync(alpha=0.5, staleness_fn=staleness_constant)
    result = strategy.submit(arrays([1, 1]), Contribution(arrays([2, -2]), True, 0, 10))
    assert close(result, arrays([2, 0]))  # 0.5*[1,1] + 0.5*[3,-1]


def test_fedbuff_waits_for_k_then_steps_by_staleness_weighted_mean() -> None:
    # Given K = 2, server lr 0.5, deltas [4] (staleness 0, w=1) and [1] (staleness 3, w=1/2)
    strategy = FedBuff(buffer_size=2, server_lr=0.5)
    current = arrays([10])
    # When the first arrives, it is only buffered
    assert strategy.submit(current, Contribution(arrays([4]), True, 0, 5)) is None
    assert strategy.buffered == 1
    # Then the second flushes: mean = (1*4 + 0.5*1) / 1.5 = 3, x = 10 + 0.5*3 = 11.5
    result = strategy.submit(current, Contribution(arrays([1]), True, 3, 5))
    assert result is not None and close(result, arrays([11.5]))
    assert strategy.buffered == 0


def test_fedbuff_example_weighting_and_momentum() -> None:
    strategy = FedBuff(buffer_size=2, momentum=0.5, weight_by_examples=True)
    first = strategy.submit(arrays([0]), Contribution(arrays([1]), True, 0, 30))
    assert first is None
    step1 = strategy.submit(arrays([0]), Contribution(arrays([3]), True, 0, 10))
    assert step1 is not None and close(step1, arrays([1.5]))  # (30*1 + 10*3) / 40
    strategy.submit(step1, Contribution(arrays([1]), True, 0, 1))
    step2 = strategy.submit(step1, Contribution(arrays([1]), True, 0, 1))
    assert step2 is not None and close(step2, arrays([1.5 + 0.5 * 1.5 + 1]))


def test_fedbuff_refuses_full_weights() -> None:
    with pytest.raises(ValueError, match="deltas"):
        FedBuff(buffer_size=1).submit(arrays([0]), Contribution(arrays([1]), False, 0, 1))


def test_fedavg_averages_a_round_by_example_count() -> None:
    strategy = FedAvg(cohort=3)
    current = arrays([0, 0])
    assert strategy.submit(current, Contribution(arrays([1, 2]), False, 0, 10)) is None
    assert strategy.submit(current, Contribution(arrays([4, 8]), False, 0, 20)) is None
    result = strategy.submit(current, Contribution(arrays([7, 2]), False, 0, 10))
    assert result is not None and close(result, arrays([4, 5]))  # (10a + 20b + 10c) / 40


def test_fedavg_refuses_updates_of_an_older_round() -> None:
    with pytest.raises(ValueError, match="current round"):
        FedAvg(cohort=2).submit(arrays([0]), Contribution(arrays([1]), False, 1, 1))


def test_flush_folds_in_a_partial_buffer_and_state_round_trips() -> None:
    strategy = FedBuff(buffer_size=4)
    strategy.submit(arrays([0]), Contribution(arrays([2]), True, 0, 1))
    restored = FedBuff(buffer_size=4)
    restored.load_state(strategy.state())
    assert restored.buffered == 1
    result = restored.flush(arrays([1]))
    assert result is not None and close(result, arrays([3]))
    assert restored.flush(arrays([3])) is None


# ---------------------------------------------------------------- properties

ALPHAS = st.floats(0.0, 1.0)
STALENESS = st.integers(0, 10_000)
EXPONENTS = st.floats(0.0, 5.0)


@given(ALPHAS, STALENESS, EXPONENTS, st.integers(0, 50), st.sampled_from(
    ["constant", "polynomial", "hinge"]))
def test_mixing_weight_stays_in_unit_interval(alpha: float, t: int, a: float, b: int,
                                              kind: str) -> None:
    assert 0.0 <= alpha * make_staleness(kind, a, b)(t) <= 1.0


@given(STALENESS, EXPONENTS, st.integers(0, 50), st.sampled_from(
    ["constant", "polynomial", "hinge"]))
def test_staleness_weights_never_grow_with_staleness(t: int, a: float, b: int,
                                                     kind: str) -> None:
    s = make_staleness(kind, a, b)
    assert s(t + 1) <= s(t)
    assert fedbuff_staleness_weight(t + 1) <= fedbuff_staleness_weight(t)


VECTORS = st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=6)


@given(VECTORS, VECTORS)
def test_fedasync_with_staleness_0_and_alpha_1_returns_the_update(x: list[float],
                                                                  y: list[float]) -> None:
    n = min(len(x), len(y))
    result = fedasync_step(arrays(x[:n]), arrays(y[:n]), 1.0, 0, make_staleness("polynomial"))
    assert np.array_equal(result[0], arrays(y[:n])[0])


@given(VECTORS, VECTORS)
def test_fedbuff_with_k1_staleness_0_lr_1_returns_base_plus_delta(x: list[float],
                                                                   d: list[float]) -> None:
    n = min(len(x), len(d))
    result = FedBuff(buffer_size=1).submit(arrays(x[:n]), Contribution(arrays(d[:n]), True, 0, 1))
    assert result is not None
    assert np.allclose(result[0], np.float32(x[:n]) + np.float32(d[:n]), rtol=1e-5, atol=1e-3)


@settings(deadline=None)
@given(VECTORS, st.lists(st.floats(0.01, 100), min_size=1, max_size=5))
def test_the_average_of_identical_updates_is_that_update(x: list[float],
                                                         weights: list[float]) -> None:
    same = [arrays(x)] * len(weights)
    assert np.allclose(weighted_mean(same, weights)[0], arrays(x)[0], rtol=1e-5, atol=1e-3)
    fedavg = FedAvg(cohort=len(weights))
    results = [fedavg.submit(arrays([0] * len(x)), Contribution(arrays(x), False, 0, 3))
               for _ in weights]
    assert results[-1] is not None and np.allclose(results[-1][0], arrays(x)[0], atol=1e-3)


def test_staleness_functions_match_their_formulas_at_random_points() -> None:
    for t in range(0, 40, 7):
        assert staleness_polynomial(t, 0.7) == pytest.approx((t + 1) ** -0.7)
        assert fedbuff_staleness_weight(t) == pytest.approx(1 / math.sqrt(1 + t))
