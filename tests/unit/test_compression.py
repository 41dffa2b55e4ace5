"""The compression math (common/compression.py) and the worker's residual (worker/packing.py):
round-trip error bounds, top-k's choice, error feedback that loses nothing, and every malformed
wire form refused with its reason before anything is allocated or applied."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.compression import (
    TINY,
    Compressed,
    Compression,
    compress,
    decompress,
    with_feedback,
)
from common.errors import RejectedUpdate
from common.messages import TrainTask
from worker.packing import DeltaPacker
from worker.shaping import Shaped

FLOAT16, INT8 = Compression("float16"), Compression("int8")
TOP10 = Compression("topk", 0.1)
layers = st.lists(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=12),
                             elements=st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=4)
TEMPLATE = [np.zeros((4, 5), np.float32), np.zeros(3, np.float32)]


def delta(seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=t.shape) * scale).astype(np.float32) for t in TEMPLATE]


# ---------------------------------------------------------------- round trips

@settings(max_examples=200, deadline=None)
@given(layers)
def test_float16_round_trip_is_within_half_a_unit_in_the_last_place(update: list[np.ndarray]
                                                                    ) -> None:
    # When a delta is sent as float16 and read back
    back = decompress(compress(update, FLOAT16), FLOAT16, update)
    # Then each value is within float16's rounding (relative 2^-11; absolute 2^-25 near zero)
    for b, u in zip(back, update, strict=True):
        assert b.dtype == u.dtype and b.shape == u.shape
        assert np.all(np.abs(b - u) <= np.maximum(np.abs(u) * 2.0 ** -11, 2.0 ** -25))


@settings(max_examples=200, deadline=None)
@given(layers)
def test_int8_round_trip_is_within_half_a_step_of_each_layers_scale(update: list[np.ndarray]
                                                                    ) -> None:
    # When a delta is sent as int8 with a scale per layer
    sent = compress(update, INT8)
    back = decompress(sent, INT8, update)
    # Then the scale is max|x| / 127 and every value is within half a step of it (a layer
    # too small for a normal float32 scale is sent as zeros)
    for layer, (b, u, scale) in enumerate(zip(back, update, sent.scales[0], strict=True)):
        peak = float(np.max(np.abs(u))) if u.size else 0.0
        assert sent.values[layer].dtype == np.int8 and sent.values[layer].min(initial=0) >= -127
        if peak < TINY * 127:
            assert scale == 0 and np.all(b == 0), layer
            continue
        assert math.isclose(float(scale), peak / 127, rel_tol=1e-6), layer
        assert np.all(np.abs(b - u) <= float(scale) * (0.5 + 1e-5))


def test_top_k_sends_the_largest_entries_of_each_layer_and_nothing_else() -> None:
    # Given a layer of 20 entries and a fraction of 10 % (ceil: 2 of 20, 1 of 3)
    update = [np.arange(20, dtype=np.float32).reshape(4, 5) - 10, np.array([0.5, -3, 1],
                                                                          np.float32)]
    sent = compress(update, TOP10)
    # Then the two entries of largest magnitude are sent, indices increasing, as uint32
    assert sent.indices[0].tolist() == [0, 19] and sent.values[0].tolist() == [-10.0, 9.0]
    assert sent.indices[1].tolist() == [1] and sent.indices[0].dtype == np.uint32
    # And read back, everything else is zero
    back = decompress(sent, TOP10, update)
    assert back[0].ravel()[[0, 19]].tolist() == [-10.0, 9.0]
    assert np.count_nonzero(back[0]) == 2 and back[1].tolist() == [0.0, -3.0, 0.0]


@pytest.mark.parametrize(("fraction", "size", "kept"), [(0.01, 4096, 41), (0.1, 10, 1),
                                                        (0.01, 10, 1), (1.0, 7, 7), (0.5, 0, 0)])
def test_top_k_keeps_ceil_of_the_fraction_and_at_least_one(fraction: float, size: int,
                                                            kept: int) -> None:
    assert Compression("topk", fraction).kept(size) == kept


def test_none_sends_the_delta_as_it_is() -> None:
    update = delta()
    sent = compress(update, Compression())
    assert sent.scales == () and sent.indices == ()
    assert all(s is u or np.shares_memory(s, u) for s, u in zip(sent.values, update,
                                                                 strict=True))


@pytest.mark.parametrize(("method", "fraction"), [("zip", 0.0), ("topk", 0.0), ("topk", 1.5)])
def test_a_bad_compression_spec_is_refused(method: str, fraction: float) -> None:
    with pytest.raises(ValueError):
        Compression(method, fraction)  # type: ignore[arg-type]


# ---------------------------------------------------------------- error feedback

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 25), st.integers(0, 2**31), st.sampled_from([0.01, 0.1, 0.5]))
def test_error_feedback_loses_nothing_sent_plus_residual_is_the_sum_of_deltas(
        rounds: int, seed: int, fraction: float) -> None:
    # Given a worker sending `rounds` deltas with top-k and error feedback
    spec, residual = Compression("topk", fraction), None
    total_true = [np.zeros(t.shape, np.float64) for t in TEMPLATE]
    total_sent = [np.zeros(t.shape, np.float64) for t in TEMPLATE]
    for step in range(rounds):
        true = delta(seed + step)
        sent, residual = with_feedback(true, residual, spec)
        for layer, (s, t) in enumerate(zip(decompress(sent, spec, TEMPLATE), true, strict=True)):
            total_sent[layer] += s
            total_true[layer] += t
    # Then everything sent plus what is still held is the sum of the true deltas
    assert residual is not None
    for s, r, t in zip(total_sent, residual, total_true, strict=True):
        np.testing.assert_allclose(s + r, t, rtol=1e-5, atol=1e-4)


def test_with_error_feedback_a_constant_delta_is_delivered_in_full_over_time() -> None:
    # Given the same small delta every round, and 10 % of entries sent each time
    true, spec, residual = delta(1), TOP10, None
    sent_total = [np.zeros(t.shape, np.float64) for t in TEMPLATE]
    for _ in range(200):
        sent, residual = with_feedback(true, residual, spec)
        sent_total = [a + s for a, s in zip(sent_total, decompress(sent, spec, TEMPLATE),
                                            strict=True)]
    # Then the average sent converges on the delta (the residual stays bounded)
    for a, t in zip(sent_total, true, strict=True):
        np.testing.assert_allclose(a / 200, t, atol=0.1)
    assert residual is not None and max(float(np.abs(r).max()) for r in residual) < 20


def task(method: str = "topk", job: str = "j", fraction: float = 0.1) -> TrainTask:
    return TrainTask(task_id="t", job=job, min_version=0, send_delta=True,
                     compression=method, topk_fraction=fraction)  # type: ignore[arg-type]


def test_the_worker_carries_the_residual_forward_only_once_an_update_is_sent() -> None:
    # Given a worker packing top-k updates
    packer, shaped = DeltaPacker(), Shaped(tuple(delta(2)), is_delta=True)
    first = packer.pack(task(), shaped)
    assert first["compression"] == "topk" and packer.residual is None
    # When the update is handed back instead of sent, the next one starts from no residual
    again = packer.pack(task(), shaped)
    assert all(np.array_equal(a, b) for a, b in zip(first["weights"], again["weights"],
                                                    strict=True))
    # When it is sent, the next update adds the residual (other entries win)
    packer.sent()
    assert packer.residual is not None
    following = packer.pack(task(), shaped)
    assert not all(np.array_equal(a, b) for a, b in zip(first["indices"],
                                                        following["indices"], strict=True))
    # And another job (or compression) starts from zero again
    packer.sent()
    other = packer.pack(task(job="other"), shaped)
    assert all(np.array_equal(a, b) for a, b in zip(first["indices"], other["indices"],
                                                    strict=True))


def test_a_lost_confirm_drops_the_residual_rather_than_send_its_entries_twice() -> None:
    # Given a worker holding a residual from a sent top-k update
    packer, shaped = DeltaPacker(), Shaped(tuple(delta(2)), is_delta=True)
    first = packer.pack(task(), shaped)
    packer.sent()
    packer.pack(task(), shaped)
    # When the next update's publish fails with the connection (it may have reached the broker)
    packer.forget()
    # Then nothing carries over: the next update starts from no residual, like the first
    after = packer.pack(task(), shaped)
    assert packer.residual is None
    assert all(np.array_equal(a, b) for a, b in zip(first["indices"], after["indices"],
                                                    strict=True))


def test_the_worker_sends_uncompressed_weights_and_full_weights_as_they_are() -> None:
    packer, shaped = DeltaPacker(), Shaped(tuple(delta()), is_delta=True)
    assert packer.pack(task("none"), shaped) == {"weights": shaped.weights, "is_delta": True}
    full = Shaped(tuple(delta()), is_delta=False)
    assert packer.pack(task("int8"), full) == {"weights": full.weights, "is_delta": False}
    int8 = packer.pack(task("int8"), shaped)
    assert int8["compression"] == "int8" and len(int8["scales"]) == 1 and packer.pending is None


# ---------------------------------------------------------------- refusals

def top(values: list[int], layer0: list[float] | None = None) -> Compressed:
    """A top-k (10 %) form of TEMPLATE with the given indices for layer 0 (2 are expected)."""
    return Compressed((np.array(layer0 or [1.0] * len(values), np.float32),
                       np.array([1.0], np.float32)),
                      indices=(np.array(values, np.uint32), np.array([2], np.uint32)))


def int8_form(scales: list[float], low: int = -5) -> Compressed:
    return Compressed((np.full((4, 5), low, np.int8), np.zeros(3, np.int8)),
                      scales=(np.array(scales, np.float32),))


MALFORMED: dict[str, tuple[Compression, Compressed, str]] = {
    "index out of range": (TOP10, top([3, 20]), "index 20 is out of range for 20"),
    "duplicate indices": (TOP10, top([3, 3]), "not strictly increasing"),
    "indices out of order": (TOP10, top([7, 3]), "not strictly increasing"),
    "too few indices": (TOP10, top([3]), "indices have shape (1,), expected (2,)"),
    "too many indices": (TOP10, top([1, 2, 3]), "expected (2,)"),
    "values and indices disagree": (TOP10, top([1, 2], [1.0]), "values have shape (1,)"),
    "signed indices": (TOP10, replace(top([1, 2]), indices=(np.array([1, 2], np.int64),
                                                             np.array([2], np.uint32))),
                       "indices are int64, expected uint32"),
    "a missing index array": (TOP10, replace(top([1, 2]), indices=top([1, 2]).indices[:1]),
                              "1 index arrays"),
    "float64 top-k values": (TOP10, replace(top([1, 2]), values=(np.ones(2), np.ones(1))),
                             "values are float64"),
    "NaN scale": (INT8, int8_form([float("nan"), 1.0]), "finite and not negative"),
    "infinite scale": (INT8, int8_form([float("inf"), 1.0]), "finite and not negative"),
    "negative scale": (INT8, int8_form([-1.0, 1.0]), "finite and not negative"),
    "one scale short": (INT8, int8_form([1.0]), "scales have shape (1,), expected (2,)"),
    "no scales": (INT8, replace(int8_form([1.0, 1.0]), scales=()), "one array of scales"),
    "level -128": (INT8, int8_form([1.0, 1.0], low=-128), "-128 is outside"),
    "int8 of the wrong shape": (INT8, replace(int8_form([1.0, 1.0]), values=(
        np.zeros((5, 4), np.int8), np.zeros(3, np.int8))), "shape (5, 4), expected (4, 5)"),
    "float32 sent as float16": (FLOAT16, Compressed(tuple(TEMPLATE)), "float32, expected float16"),
    "a layer missing": (FLOAT16, Compressed((np.zeros((4, 5), np.float16),)), "1 value arrays"),
    "scales with float16": (FLOAT16, Compressed(tuple(t.astype(np.float16) for t in TEMPLATE),
                                                scales=(np.ones(2, np.float32),)),
                            "scales are sent only with int8"),
    "indices with int8": (INT8, replace(int8_form([1.0, 1.0]), indices=(np.zeros(1, np.uint32),)),
                          "indices are sent only with topk"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_compressed_delta_is_refused_with_its_reason(case: str) -> None:
    spec, sent, reason = MALFORMED[case]
    with pytest.raises(RejectedUpdate, match=reason.replace("(", r"\(").replace(")", r"\)")
                       ) as caught:
        decompress(sent, spec, TEMPLATE)
    assert caught.value.code == "bad_compression"
