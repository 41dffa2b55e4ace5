"""Staleness functions and the FedAsync step (coordinator/strategies.py) against hand-computed
values, and the properties every staleness-weighted mix must have (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.strategies import (
    Contribution,
    FedAsync,
    StalenessFn,
    Strategy,
    fedasync_step,
    make_staleness,
    staleness_constant,
    staleness_hinge,
    staleness_polynomial,
)
from coordinator.strategies.fedasync import SMALL_BLOCK, mix

KINDS = ["constant", "polynomial", "hinge"]


def vec(*values: float, dtype: type = np.float32) -> np.ndarray:
    return np.array(values, dtype=dtype)


def assert_layers_equal(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- staleness by hand

@pytest.mark.parametrize("t", [0, 1, 7, 10_000])
def test_constant_staleness_is_always_one(t: int) -> None:
    assert staleness_constant(t) == 1.0


@pytest.mark.parametrize(("t", "a", "expected"), [
    (0, 0.5, 1.0),        # (0 + 1)^-0.5
    (3, 0.5, 0.5),        # 4^-0.5
    (8, 0.5, 1 / 3),      # 9^-0.5
    (99, 0.5, 0.1),       # 100^-0.5
    (1, 1.0, 0.5),        # 2^-1
    (4, 1.0, 0.2),        # 5^-1
    (3, 2.0, 1 / 16),     # 4^-2
    (50, 0.0, 1.0),       # a = 0 ignores staleness
])
def test_polynomial_staleness_by_hand(t: int, a: float, expected: float) -> None:
    assert staleness_polynomial(t, a) == pytest.approx(expected)


@pytest.mark.parametrize(("t", "a", "b", "expected"), [
    (0, 0.5, 4, 1.0),     # t <= b
    (4, 0.5, 4, 1.0),     # t == b is still fresh
    (5, 0.5, 4, 2 / 3),   # 1 / (0.5 * 1 + 1)
    (6, 0.5, 4, 0.5),     # 1 / (0.5 * 2 + 1)
    (12, 0.5, 4, 0.2),    # 1 / (0.5 * 8 + 1)
    (1, 1.0, 0, 0.5),     # 1 / (1 * 1 + 1)
    (3, 1.0, 0, 0.25),    # 1 / (1 * 3 + 1)
])
def test_hinge_staleness_by_hand(t: int, a: float, b: int, expected: float) -> None:
    assert staleness_hinge(t, a, b) == pytest.approx(expected)


def test_make_staleness_binds_the_parameters() -> None:
    # Given the functions built by name, then they agree with the formulas at a few points
    assert make_staleness("constant")(9) == 1.0
    assert make_staleness("polynomial", a=0.5)(3) == pytest.approx(0.5)
    assert make_staleness("hinge", a=0.5, b=4)(6) == pytest.approx(0.5)
    assert make_staleness("hinge", a=0.5, b=4)(4) == 1.0


def test_an_unknown_staleness_function_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown staleness function 'linear'"):
        make_staleness("linear")


# ---------------------------------------------------------------- the FedAsync step by hand

def test_fedasync_step_with_polynomial_staleness_by_hand() -> None:
    # Given x = [1, 2], x_new = [3, 6], alpha 0.6, polynomial a = 0.5 at staleness 3
    # When one step is taken: alpha_t = 0.6 * 0.5 = 0.3
    result = fedasync_step([vec(1, 2)], [vec(3, 6)], 0.6, 3, make_staleness("polynomial", 0.5))
    # Then x = 0.7 * [1, 2] + 0.3 * [3, 6] = [1.6, 3.2]
    assert_layers_equal(result, [vec(1.6, 3.2)])


def test_fedasync_step_mixes_every_layer_with_the_same_weight() -> None:
    # Given two layers, alpha 0.25 and constant staleness (alpha_t = 0.25)
    current = [np.array([[0, 4], [8, 8]], np.float32), vec(1)]
    new = [np.array([[4, 0], [0, 8]], np.float32), vec(5)]
    # When one step is taken
    result = fedasync_step(current, new, 0.25, 10, staleness_constant)
    # Then each layer is 0.75 * current + 0.25 * new
    assert_layers_equal(result, [np.array([[1, 3], [6, 8]], np.float32), vec(2)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, SMALL_BLOCK - 1, 2 * SMALL_BLOCK + 7])
def test_mixing_block_by_block_gives_the_whole_layer_formula_bit_for_bit(
        dtype: type, size: int) -> None:
    # Given layers of any size against the block (one element, under one block, over two)
    rng = np.random.default_rng(size)
    current = [rng.standard_normal(size).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)]
    new = [rng.standard_normal(size).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)]
    # When mixed
    result = mix(current, new, 0.37)
    # Then every bit is that of (1 - w) * current + w * new over whole layers, in new arrays
    for got, c, n in zip(result, current, new, strict=True):
        expected = np.multiply(c, 1.0 - 0.37)
        expected += np.multiply(n, 0.37)
        assert got.dtype == dtype and got.shape == c.shape
        assert got.tobytes() == expected.tobytes()
        assert not np.shares_memory(got, c) and not np.shares_memory(got, n)


def test_fedasync_step_with_hinge_staleness_by_hand() -> None:
    # Given alpha 0.8 and hinge a = 0.5, b = 4 at staleness 6: alpha_t = 0.8 * 0.5 = 0.4
    result = fedasync_step([vec(10, -10)], [vec(0, 10)], 0.8, 6, make_staleness("hinge", 0.5, 4))
    # Then x = 0.6 * [10, -10] + 0.4 * [0, 10] = [6, -2]
    assert_layers_equal(result, [vec(6, -2)])


def test_a_fresh_update_counts_more_than_a_stale_one() -> None:
    s = make_staleness("polynomial", 0.5)
    fresh = fedasync_step([vec(0)], [vec(1)], 0.5, 0, s)[0][0]   # 0.5
    stale = fedasync_step([vec(0)], [vec(1)], 0.5, 3, s)[0][0]   # 0.25
    assert (fresh, stale) == (pytest.approx(0.5), pytest.approx(0.25))


def test_fedasync_strategy_with_full_weights_is_the_fedasync_step() -> None:
    # Given a FedAsync strategy and an update of full trained weights at staleness 3
    strategy = FedAsync(alpha=0.6, staleness_fn=make_staleness("polynomial", 0.5))
    # When it is submitted
    result = strategy.submit([vec(1, 2)], Contribution([vec(3, 6)], False, 3, 10))
    # Then the model moves exactly as fedasync_step says
    assert_layers_equal(result, [vec(1.6, 3.2)])
    assert strategy.buffered == 0 and not strategy.wants_delta and not strategy.synchronous


def test_fedasync_with_a_delta_mixes_in_current_plus_delta() -> None:
    # Given x = [1, 2] and a delta [2, -2] (so x_new = [3, 0]) at staleness 3, alpha 0.5, a 0.5
    strategy = FedAsync(alpha=0.5, staleness_fn=make_staleness("polynomial", 0.5))
    # When it is submitted: alpha_t = 0.25
    result = strategy.submit([vec(1, 2)], Contribution([vec(2, -2)], True, 3, 10))
    # Then x = 0.75 * [1, 2] + 0.25 * [3, 0] = [1.5, 1.5]
    assert_layers_equal(result, [vec(1.5, 1.5)])


def test_fedasync_holds_nothing_back_for_a_flush() -> None:
    strategy: Strategy = FedAsync(alpha=0.5, staleness_fn=staleness_constant)
    assert strategy.flush([vec(1)]) is None and strategy.state() == {}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("is_delta", [False, True])
def test_fedasync_keeps_each_layers_dtype(dtype: type, is_delta: bool) -> None:
    # Given a model and an update of one float dtype
    strategy = FedAsync(alpha=0.6, staleness_fn=make_staleness("polynomial", 0.5))
    current = [vec(1, 2, dtype=dtype), np.ones((2, 2), dtype)]
    update = [vec(3, 6, dtype=dtype), np.zeros((2, 2), dtype)]
    # When an update is applied
    result = strategy.submit(current, Contribution(update, is_delta, 3, 10))
    # Then every layer keeps its dtype and shape
    assert [(r.dtype, r.shape) for r in result] == [(c.dtype, c.shape) for c in current]


def test_layers_of_different_dtypes_each_keep_their_own() -> None:
    current = [vec(1, dtype=np.float16), vec(1, dtype=np.float64)]
    result = fedasync_step(current, [vec(3, dtype=np.float16), vec(3, dtype=np.float64)], 0.5,
                           0, staleness_constant)
    assert [r.dtype for r in result] == [np.float16, np.float64]
    assert_layers_equal(result, [vec(2, dtype=np.float16), vec(2, dtype=np.float64)])


def test_the_step_reads_read_only_inputs_and_changes_neither() -> None:
    # Given read-only arrays, as the codec decodes them
    current, new = vec(1, 2), vec(3, 6)
    for array in (current, new):
        array.flags.writeable = False
    # When a step is taken, then the inputs are unchanged and the result is a new array
    result = fedasync_step([current], [new], 0.5, 0, staleness_constant)
    assert np.array_equal(current, vec(1, 2)) and np.array_equal(new, vec(3, 6))
    assert result[0] is not current and result[0].flags.writeable


def test_a_different_number_of_layers_is_an_error() -> None:
    with pytest.raises(ValueError):
        fedasync_step([vec(1), vec(2)], [vec(1)], 0.5, 0, staleness_constant)


# ---------------------------------------------------------------- properties

ALPHA = st.floats(0.0, 1.0)
STALENESS = st.integers(0, 100_000)
EXPONENT = st.floats(0.0, 8.0)
THRESHOLD = st.integers(0, 100)
STALENESS_FN = st.builds(make_staleness, st.sampled_from(KINDS), EXPONENT, THRESHOLD)
LAYERS = hnp.arrays(st.sampled_from([np.float32, np.float64]),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                    elements=st.floats(-1e6, 1e6, width=32))


@given(ALPHA, STALENESS, STALENESS_FN)
def test_the_mixing_weight_is_always_between_0_and_1(alpha: float, t: int, s: StalenessFn) -> None:
    assert 0.0 <= alpha * s(t) <= 1.0


@given(STALENESS, STALENESS_FN)
def test_staleness_weight_never_grows_with_staleness(t: int, s: StalenessFn) -> None:
    assert s(t + 1) <= s(t)


@given(STALENESS_FN)
def test_a_fresh_update_has_full_weight(s: StalenessFn) -> None:
    assert s(0) == 1.0


@settings(deadline=None)
@given(LAYERS, st.data(), st.sampled_from(KINDS))
def test_alpha_1_at_staleness_0_returns_the_update(current: np.ndarray, data: st.DataObject,
                                                  kind: str) -> None:
    # Given any model and any update of the same shape and dtype
    new = data.draw(hnp.arrays(current.dtype, current.shape, elements=st.floats(-1e6, 1e6,
                                                                               width=32)))
    # When mixed with alpha 1 at staleness 0, then the result is the update itself
    result = fedasync_step([current], [new], 1.0, 0, make_staleness(kind))
    assert np.array_equal(result[0], new) and result[0].dtype == new.dtype


@settings(deadline=None)
@given(LAYERS, st.data(), STALENESS)
def test_alpha_0_leaves_the_model_unchanged(current: np.ndarray, data: st.DataObject,
                                           t: int) -> None:
    new = data.draw(hnp.arrays(current.dtype, current.shape, elements=st.floats(-1e6, 1e6,
                                                                               width=32)))
    assert np.array_equal(fedasync_step([current], [new], 0.0, t, staleness_constant)[0],
                          current)


@settings(deadline=None)
@given(LAYERS, ALPHA, STALENESS, STALENESS_FN)
# a subnormal: 0.5 x 1e-45 rounds to 0 in float32, so (1 - w) x + w x is 0 (found by a run)
@example(np.array(1e-45, np.float32), 0.5, 0, staleness_constant)
def test_an_update_identical_to_the_model_leaves_it_unchanged(
        current: np.ndarray, alpha: float, t: int, s: StalenessFn) -> None:
    # Given an update equal to the current model, when it is mixed in with any weight
    result = fedasync_step([current], [current.copy()], alpha, t, s)
    # Then the model is unchanged up to the rounding of (1 - w) x + w x: relative for normal
    # numbers, and below the smallest normal number for subnormal ones (where a rounding is a
    # step of absolute size, so 1e-45 may become 0)
    assert result[0].dtype == current.dtype
    np.testing.assert_allclose(result[0], current, rtol=1e-6,
                               atol=float(np.finfo(current.dtype).tiny))


@settings(deadline=None)
@given(LAYERS, st.data(), ALPHA, STALENESS, st.sampled_from(KINDS))
def test_a_delta_update_equals_the_full_update_it_stands_for(
        current: np.ndarray, data: st.DataObject, alpha: float, t: int, kind: str) -> None:
    # Given an update sent as trained weights and the same update sent as a delta (float64
    # so that trained - base + base is exact enough)
    current = current.astype(np.float64)
    trained = data.draw(hnp.arrays(np.float64, current.shape, elements=st.floats(-1e6, 1e6)))
    strategy = FedAsync(alpha=alpha, staleness_fn=make_staleness(kind))
    # When each is submitted to the same model
    full = strategy.submit([current], Contribution([trained], False, t, 1))
    delta = strategy.submit([current], Contribution([trained - current], True, t, 1))
    # Then they move the model to the same place
    np.testing.assert_allclose(delta[0], full[0], rtol=1e-9, atol=1e-6)
