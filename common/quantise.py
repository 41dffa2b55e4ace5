"""Fixed-point encoding of clipped deltas into the secure-aggregation field Z_(2^32).

Secure aggregation (common/masking.py) adds updates as integers mod 2^32, so a worker's float
delta must become integers first: clip it to L2 norm C (every coordinate is then within [-C, C]),
multiply by a scale, round stochastically (unbiased: E[round(x)] = x, so the buffer's mean is not
skewed), and store negative numbers in two's complement. The scale is chosen so that the weighted
sum of the largest allowed buffer can never leave (-2^31, 2^31): the sum decodes exactly, with no
wrap-around. Pure functions over numpy arrays: no broker, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.arrays import Arrays, clip_by_global_norm

FIELD_BITS = 32
FIELD = np.uint32
"""Shares, masks and sums are uint32 arrays: numpy's wrapping arithmetic is arithmetic mod 2^32."""
SIGNED_LIMIT = 2 ** (FIELD_BITS - 1)
"""A decoded sum must lie strictly within (-2^31, 2^31)."""


def max_scale(clip: float, max_weight_total: int) -> float:
    """The largest scale whose quantised weighted sum can never overflow the field.

    After clipping every |x| <= C, so a stochastically rounded coordinate is at most
    floor(C * scale) + 1 in magnitude, and a buffer sums at most `max_weight_total` (the largest
    buffer times the largest integer weight) of them: we need W * (C * scale + 1) < 2^31.
    """
    if clip <= 0 or max_weight_total < 1:
        raise ValueError("clip must be > 0 and the weight total >= 1")
    per_update = (SIGNED_LIMIT - 1) // max_weight_total - 1
    if per_update < 1:
        raise ValueError(f"a weight total of {max_weight_total} leaves no room in a "
                         f"{FIELD_BITS}-bit field")
    return per_update / clip


def stochastic_round(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """floor(x) + 1 with probability frac(x), else floor(x): unbiased, as int64."""
    floor = np.floor(values)
    up = rng.random(values.shape) < (values - floor)
    return (floor + up).astype(np.int64)


def quantise(delta: Sequence[np.ndarray], clip: float, scale: float,
             rng: np.random.Generator) -> Arrays:
    """Clip `delta` to L2 norm `clip`, scale, round stochastically: uint32 (two's complement)."""
    clipped = clip_by_global_norm([np.asarray(d, dtype=np.float64) for d in delta], clip)
    bound = int(np.floor(clip * scale)) + 1
    out = []
    for layer in clipped:
        integers = stochastic_round(layer * scale, rng)
        if integers.size and int(np.max(np.abs(integers))) > bound:  # cannot happen after a clip
            raise ValueError("a quantised coordinate is out of the bound the scale was chosen for")
        out.append(integers.astype(FIELD))  # int64 -> uint32 keeps the value mod 2^32
    return out


def to_signed(field_sum: np.ndarray) -> np.ndarray:
    """A field element read as a two's-complement signed integer (int64)."""
    return np.asarray(field_sum, dtype=FIELD).astype(np.int32).astype(np.int64)


def dequantise_mean(field_sum: Sequence[np.ndarray], scale: float, weight_total: int,
                    like: Sequence[np.ndarray]) -> Arrays:
    """sum_i w_i q_i (mod 2^32) back to floats: the weighted mean sum w_i x_i / sum w_i.

    `like` gives each layer's float dtype (the model's).
    """
    if weight_total < 1:
        raise ValueError("the weight total must be >= 1")
    return [(to_signed(s) / (scale * weight_total)).astype(np.asarray(template).dtype)
            for s, template in zip(field_sum, like, strict=True)]
