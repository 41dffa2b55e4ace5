"""Secure aggregation arithmetic (common/quantise.py, common/masking.py): exact, uniform."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from common import masking, quantise
from common.arrays import flatten

SHAPES = [(7, 3), (3,), (5,)]


def plain_weighted_sum(quantised: list[list[np.ndarray]], weights: list[int]) -> list[np.ndarray]:
    """sum_i w_i q_i with Python's unbounded integers, reduced mod 2^32 at the very end."""
    out = []
    for layer in range(len(quantised[0])):
        exact = sum(int(w) * quantise.to_signed(q[layer]).astype(object)
                    for q, w in zip(quantised, weights, strict=True))
        out.append(np.array([int(v) % 2 ** 32 for v in np.ravel(exact)], dtype=np.uint64)
                   .astype(np.uint32).reshape(quantised[0][layer].shape))
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 12), st.integers(1, 64))
def test_unmasked_buffer_sum_equals_the_plain_quantised_weighted_sum_bit_for_bit(
        seed: int, members: int, max_weight: int) -> None:
    # Given a buffer of random clipped, quantised deltas, some pinned to the edges of the range,
    rng = np.random.default_rng(seed)
    clip = float(rng.uniform(0.01, 10.0))
    weights = [int(w) for w in rng.integers(1, max_weight + 1, members)]
    scale = quantise.max_scale(clip, members * max_weight)
    quantised = []
    for i in range(members):
        delta = [rng.normal(0, clip, s) for s in SHAPES]
        if i % 3 == 0:   # all the norm on one coordinate, at +C or -C
            delta = [np.zeros(s) for s in SHAPES]
            delta[0][0, 0] = clip * (1 if i % 2 else -1)
        quantised.append(quantise.quantise(delta, clip, scale, rng))
    # each masked by its own fresh seed
    seeds = [masking.new_seed() for _ in range(members)]
    shares = [masking.share(q, s) for q, s in zip(quantised, seeds, strict=True)]
    # When the coordinator sums its shares and the helper its masks, with the same weights
    share_sum = masking.weighted_field_sum(shares, weights)
    mask_sum = masking.weighted_mask_sum(seeds, weights, SHAPES)
    # Then share + mask is the plain weighted sum, bit for bit
    unmasked = masking.unshare(share_sum, mask_sum)
    for got, want in zip(unmasked, plain_weighted_sum(quantised, weights), strict=True):
        assert got.dtype == np.uint32 and np.array_equal(got, want)
    # And it decodes without wrap-around: within the bound of the scale
    signed = np.concatenate([quantise.to_signed(u).ravel() for u in unmasked])
    assert np.all(np.abs(signed) <= sum(weights) * (np.floor(clip * scale) + 1))


def test_wrap_around_of_the_shares_cancels_and_the_largest_buffer_does_not_overflow() -> None:
    # Given the largest buffer allowed (W = 16 * 10) whose every delta sits at +C or -C
    clip, total = 1.0, 160
    scale = quantise.max_scale(clip, total)
    rng = np.random.default_rng(1)
    for sign in (1.0, -1.0):
        quantised = [quantise.quantise([np.array([sign * clip])], clip, scale, rng)
                     for _ in range(10)]
        seeds = [masking.new_seed() for _ in range(10)]
        shares = [masking.share(q, s) for q, s in zip(quantised, seeds, strict=True)]
        # When summed with weight 16 each (every product wraps many times mod 2^32)
        summed = masking.unshare(masking.weighted_field_sum(shares, [16] * 10),
                                 masking.weighted_mask_sum(seeds, [16] * 10, [(1,)]))
        # Then the sum decodes to the exact mean +-C, just inside the field's signed range
        assert abs(int(quantise.to_signed(summed[0])[0])) < 2 ** 31
        mean = quantise.dequantise_mean(summed, scale, total, [np.zeros(1, np.float32)])
        assert mean[0][0] == pytest.approx(sign * clip, rel=1e-6)


def test_a_scale_one_step_too_large_would_overflow() -> None:
    # Given the scale chosen for a weight total of 160
    scale = quantise.max_scale(1.0, 160)
    # Then the worst case fits and a buffer one weight larger would not have
    assert 160 * (np.floor(scale) + 1) < 2 ** 31
    assert quantise.max_scale(1.0, 161) < scale
    with pytest.raises(ValueError, match="no room"):
        quantise.max_scale(1.0, 2 ** 31)


def test_stochastic_rounding_is_unbiased_and_dequantising_recovers_the_mean() -> None:
    # Given one value 0.3 quantised at scale 1, a hundred thousand times
    rng = np.random.default_rng(2)
    rounded = quantise.stochastic_round(np.full(100_000, 0.3), rng)
    # Then it rounds to 0 or 1, with mean 0.3
    assert set(np.unique(rounded).tolist()) == {0, 1}
    assert rounded.mean() == pytest.approx(0.3, abs=0.005)
    # And a buffer's mean survives quantisation to within 1/scale
    deltas = [[rng.normal(0, 0.01, (50,))] for _ in range(4)]
    scale = quantise.max_scale(1.0, 4 * 16)
    field = masking.weighted_field_sum([quantise.quantise(d, 1.0, scale, rng) for d in deltas],
                                       [16, 8, 4, 1])
    mean = quantise.dequantise_mean(field, scale, 29, [np.zeros(50, np.float32)])
    want = (16 * deltas[0][0] + 8 * deltas[1][0] + 4 * deltas[2][0] + deltas[3][0]) / 29
    assert mean[0].dtype == np.float32
    assert np.max(np.abs(mean[0] - want)) < 2 / scale


def test_a_delta_over_the_clip_is_clipped_before_quantising() -> None:
    # Given a delta of norm 10 and a clip of 1
    scale = quantise.max_scale(1.0, 16)
    q = quantise.quantise([np.array([6.0, 8.0])], 1.0, scale, np.random.default_rng(3))
    # Then what is quantised is the clipped (0.6, 0.8)
    assert quantise.to_signed(q[0]) / scale == pytest.approx([0.6, 0.8], abs=2 / scale)


def test_the_mask_is_a_deterministic_chacha20_stream_of_the_seed() -> None:
    # Given one seed
    seed = bytes(range(32))
    # Then the same seed gives the same mask, another seed another one, and a short seed fails
    first, again = masking.expand_mask(seed, SHAPES), masking.expand_mask(seed, SHAPES)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = masking.expand_mask(bytes(32), SHAPES)
    assert not np.array_equal(first[0], other[0])
    assert [m.shape for m in first] == SHAPES and first[0].dtype == np.uint32
    with pytest.raises(ValueError, match="32 bytes"):
        masking.expand_mask(b"short", SHAPES)


def uniformity(values: np.ndarray, delta: np.ndarray) -> tuple[float, float]:
    """Chi-square p-value of the top byte over 256 bins, and |correlation| with the delta."""
    counts = np.bincount((values >> 24).astype(np.int64), minlength=256)
    p_value = float(stats.chisquare(counts).pvalue)
    correlation = abs(float(np.corrcoef(values.astype(np.float64), delta)[0, 1]))
    return p_value, correlation


def test_what_the_coordinator_holds_for_one_update_is_indistinguishable_from_uniform() -> None:
    # Given one realistic delta of 100,000 coordinates (mostly small, a clear structure)
    rng = np.random.default_rng(4)
    delta = [np.sin(np.arange(100_000) / 50.0) * 0.01 + rng.normal(0, 0.002, 100_000)]
    scale = quantise.max_scale(1.0, 160)
    quantised = quantise.quantise(delta, 1.0, scale, rng)
    # When it is masked with a seed (fixed here so the test is reproducible)
    held = masking.share(quantised, bytes.fromhex("5e" * 32))[0]
    # Then a chi-square test does not reject uniformity at p = 0.01, and the correlation with
    # the true delta is below 0.01
    p_value, correlation = uniformity(held, flatten(delta))
    assert p_value > 0.01 and correlation < 0.01
    # And the same checks do reject the unmasked quantised delta (they can see a difference)
    p_plain, corr_plain = uniformity(quantised[0], flatten(delta))
    assert p_plain < 0.01 or corr_plain > 0.01


def test_weights_must_be_non_negative_integers_one_per_vector() -> None:
    vectors = [[np.zeros(2, np.uint32)], [np.zeros(2, np.uint32)]]
    for bad in ([1], [1, 0.5], [1, -1], [1, 2 ** 32]):
        with pytest.raises(ValueError):
            masking.weighted_field_sum(vectors, bad)
