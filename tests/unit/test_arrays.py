"""Array math over a model's layers (common/arrays.py): the one copy of norms and clipping."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common import arrays

layers = st.lists(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=6),
                             elements=st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(layers, st.floats(1e-3, 1e3))
def test_clipping_bounds_the_global_norm_and_leaves_short_updates_alone(
        update: list[np.ndarray], clip: float) -> None:
    # When an update is clipped
    clipped = arrays.clip_by_global_norm(update, clip)
    # Then its global L2 norm is at most the clip norm, shapes and dtypes unchanged
    assert arrays.global_norm(clipped) <= clip * (1 + 1e-6) + 1e-6
    assert [(c.shape, c.dtype) for c in clipped] == [(u.shape, u.dtype) for u in update]
    # And an update already within the norm is returned unchanged
    if arrays.global_norm(update) <= clip:
        assert all(np.array_equal(c, u) for c, u in zip(clipped, update, strict=True))


def vec(*values: float) -> list[np.ndarray]:
    return [np.array(values, dtype=np.float32)]


def test_weighted_mean_weighs_each_array_list_and_keeps_the_dtype() -> None:
    # Given two one-layer updates weighted 1 and 3
    mean = arrays.weighted_mean([vec(0.0, 4.0), vec(4.0, 8.0)], [1.0, 3.0])
    # Then the mean leans three quarters towards the second, in float32
    assert mean[0].tolist() == [3.0, 7.0] and mean[0].dtype == np.float32


def test_a_delta_added_back_to_its_base_gives_the_new_weights() -> None:
    old, new = vec(1.0, 2.0), vec(1.5, 1.0)
    delta = arrays.difference(new, old)
    assert delta[0].tolist() == [0.5, -1.0]
    assert arrays.add_scaled(old, delta)[0].tolist() == [1.5, 1.0]
    assert arrays.add_scaled(old, delta, scale=2.0)[0].tolist() == [2.0, 0.0]


def test_flatten_and_unflatten_are_inverse_and_finiteness_is_checked() -> None:
    like = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0], dtype=np.float32)]
    flat = arrays.flatten(like)
    assert flat.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0] and flat.dtype == np.float64
    back = arrays.unflatten(flat, like)
    assert [(b.shape, b.dtype) for b in back] == [(a.shape, a.dtype) for a in like]
    assert all(np.array_equal(b, a) for b, a in zip(back, like, strict=True))
    assert arrays.all_finite(like) and not arrays.all_finite(vec(1.0, float("nan")))


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64, np.complex64, np.int32]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)))
def test_the_one_pass_finiteness_check_agrees_with_numpy_elementwise(array: np.ndarray) -> None:
    # Given any array (hypothesis draws NaN, Inf and values near the dtype's maximum, whose sum
    # overflows although each is finite), when checked in one pass, then the answer is numpy's
    expected = True if array.dtype.kind == "i" else bool(np.isfinite(array).all())
    assert arrays.finite(array) is expected


def test_finite_values_whose_sum_overflows_are_still_finite() -> None:
    largest = np.finfo(np.float32).max
    assert arrays.finite(np.array([largest, largest], np.float32))
    assert not arrays.finite(np.array([largest, np.inf, -np.inf], np.float32))
    assert not arrays.all_finite([np.zeros(3, np.float32), np.array([np.nan], np.float32)])
