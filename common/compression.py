"""Compression of update deltas (issue 15): float16, int8 with a per-tensor scale, and top-k with
error feedback. Pure math over lists of numpy arrays: no broker, no I/O.

The sender calls `compress` (or `with_feedback`, which adds the residual it keeps and returns the
next one); the receiver calls `decompress`, which checks every array against the model before it
allocates the dense delta and raises RejectedUpdate for anything malformed, so a bad update is
refused with a reason and never applied.

Wire forms, one per method (a `Compressed`):
- none:    values = the delta's arrays as they are.
- float16: values = each layer cast to float16 (relative error at most 2^-11 in float16's normal
           range; a value over 65504 becomes inf, which the receiver refuses as non-finite).
- int8:    values = round(x / s) as int8 in [-127, 127], scales = one float32 array holding each
           layer's s = max|x| / 127 (0 for a layer below 1.5e-36); |x - q s| <= s / 2.
- topk:    for each layer the k = ceil(fraction x size) entries of largest magnitude: values (1-D,
           the layer's dtype) and indices (1-D uint32 into the flattened layer, strictly
           increasing: one canonical form, so a duplicate index is simply a malformed update).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.arrays import Arrays
from common.errors import RejectedUpdate

Method = Literal["none", "float16", "int8", "topk"]
METHODS: tuple[Method, ...] = ("none", "float16", "int8", "topk")
INT8_LEVELS = 127              # symmetric: -128 is never produced, and refused
INDEX_DTYPE = np.dtype(np.uint32)
MAX_LAYER_SIZE = 2 ** 32       # top-k indices are uint32
TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Compression:
    """A method, and for top-k the share of each layer's entries sent."""

    method: Method = "none"
    topk_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown compression {self.method!r}; choose from {METHODS}")
        if self.method == "topk" and not 0.0 < self.topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")

    @property
    def lossy(self) -> bool:
        return self.method != "none"

    def kept(self, size: int) -> int:
        """Entries top-k sends of a layer of `size` entries: ceil(fraction x size), at least 1."""
        if size == 0:
            return 0
        return min(size, max(1, math.ceil(self.topk_fraction * size)))


@dataclass(frozen=True)
class Compressed:
    """A delta in one method's wire form (see the module docstring)."""

    values: tuple[np.ndarray, ...]
    scales: tuple[np.ndarray, ...] = ()
    indices: tuple[np.ndarray, ...] = ()


def compress(delta: Sequence[np.ndarray], spec: Compression) -> Compressed:
    """`delta` in the wire form of `spec.method`."""
    if spec.method == "float16":
        return Compressed(tuple(np.asarray(d).astype(np.float16) for d in delta))
    if spec.method == "int8":
        scales = np.array([_int8_scale(d) for d in delta], dtype=np.float32)
        return Compressed(tuple(_quantise(d, s) for d, s in zip(delta, scales, strict=True)),
                          scales=(scales,))
    if spec.method == "topk":
        kept = [_top_k(np.asarray(d).reshape(-1), spec.kept(np.size(d))) for d in delta]
        return Compressed(tuple(v for v, _ in kept), indices=tuple(i for _, i in kept))
    return Compressed(tuple(np.asarray(d) for d in delta))


def _int8_scale(layer: np.ndarray) -> float:
    """max|x| / 127; 0 (all levels 0) when that would be a subnormal float32, whose lost
    precision would break the half-step bound (such a layer is below 1.5e-36 everywhere)."""
    peak = float(np.max(np.abs(layer))) if np.size(layer) else 0.0
    return peak / INT8_LEVELS if peak >= TINY * INT8_LEVELS else 0.0


def _quantise(layer: np.ndarray, scale: float) -> np.ndarray:
    if scale == 0.0:
        return np.zeros(np.shape(layer), dtype=np.int8)
    levels = np.rint(np.asarray(layer, dtype=np.float64) / float(scale))
    return np.clip(levels, -INT8_LEVELS, INT8_LEVELS).astype(np.int8)


def _top_k(flat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if flat.size >= MAX_LAYER_SIZE:
        raise ValueError(f"a layer of {flat.size} entries is too large for uint32 indices")
    if k >= flat.size:
        return flat.copy(), np.arange(flat.size, dtype=INDEX_DTYPE)
    largest = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:]
    index = np.sort(largest).astype(INDEX_DTYPE)
    return flat[index], index


def with_feedback(delta: Sequence[np.ndarray], residual: Sequence[np.ndarray] | None,
                  spec: Compression) -> tuple[Compressed, Arrays]:
    """Error feedback: compress delta + residual and return what was sent and what was not (the
    next residual), so the sum of everything sent plus the residual is the sum of the deltas."""
    corrected = [np.asarray(d) for d in delta] if residual is None else [
        (np.asarray(d) + r).astype(np.asarray(d).dtype) for d, r in zip(delta, residual,
                                                                         strict=True)]
    sent = compress(corrected, spec)
    dense = decompress(sent, spec, corrected)
    return sent, [c - s for c, s in zip(corrected, dense, strict=True)]


# ---------------------------------------------------------------- receiving

def _refuse(detail: str) -> RejectedUpdate:
    return RejectedUpdate("bad_compression", detail)


def decompress(sent: Compressed, spec: Compression,
               template: Sequence[np.ndarray]) -> Arrays:
    """The dense delta `sent` stands for, one array per layer of `template` (shapes and dtypes);
    RejectedUpdate("bad_compression", why) if it is not exactly `spec`'s wire form. Every count,
    shape and dtype is checked before the dense arrays are allocated."""
    if len(sent.values) != len(template):
        raise _refuse(f"{len(sent.values)} value arrays, the model has {len(template)} layers")
    if sent.scales and spec.method != "int8":
        raise _refuse(f"scales are sent only with int8, not {spec.method}")
    if sent.indices and spec.method != "topk":
        raise _refuse(f"indices are sent only with topk, not {spec.method}")
    if spec.method == "float16":
        return [_float16_layer(i, v, t)
                for i, (v, t) in enumerate(zip(sent.values, template, strict=True))]
    if spec.method == "int8":
        scales = _int8_scales(sent.scales, len(template))
        return [_int8_layer(i, v, t, float(s)) for i, (v, t, s)
                in enumerate(zip(sent.values, template, scales, strict=True))]
    if spec.method == "topk":
        if len(sent.indices) != len(template):
            raise _refuse(f"{len(sent.indices)} index arrays, the model has {len(template)} "
                          f"layers")
        return [_topk_layer(i, v, x, t, spec.kept(t.size)) for i, (v, x, t)
                in enumerate(zip(sent.values, sent.indices, template, strict=True))]
    return list(sent.values)


def _expect(what: str, array: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if array.dtype != dtype:
        raise _refuse(f"{what} are {array.dtype}, expected {dtype}")
    if array.shape != shape:
        raise _refuse(f"{what} have shape {array.shape}, expected {shape}")


def _float16_layer(layer: int, values: np.ndarray, template: np.ndarray) -> np.ndarray:
    _expect(f"array {layer}: values", values, np.dtype(np.float16), template.shape)
    return values.astype(template.dtype)


def _int8_scales(scales: tuple[np.ndarray, ...], layers: int) -> np.ndarray:
    if len(scales) != 1:
        raise _refuse(f"int8 needs one array of scales, got {len(scales)}")
    _expect("int8 scales", scales[0], np.dtype(np.float32), (layers,))
    if not np.isfinite(scales[0]).all() or (scales[0] < 0).any():
        raise _refuse("int8 scales must be finite and not negative")
    return scales[0]


def _int8_layer(layer: int, values: np.ndarray, template: np.ndarray,
                scale: float) -> np.ndarray:
    _expect(f"array {layer}: values", values, np.dtype(np.int8), template.shape)
    if values.size and int(values.min()) < -INT8_LEVELS:
        raise _refuse(f"array {layer}: int8 level -128 is outside [-127, 127]")
    return values.astype(template.dtype) * template.dtype.type(scale)


def _topk_layer(layer: int, values: np.ndarray, index: np.ndarray, template: np.ndarray,
                k: int) -> np.ndarray:
    _expect(f"array {layer}: indices", index, INDEX_DTYPE, (k,))
    _expect(f"array {layer}: values", values, template.dtype, (k,))
    if k and not bool(np.all(index[1:] > index[:-1])):
        raise _refuse(f"array {layer}: indices are not strictly increasing (duplicates or "
                      f"out of order)")
    if k and int(index[-1]) >= template.size:
        raise _refuse(f"array {layer}: index {int(index[-1])} is out of range for "
                      f"{template.size} entries")
    dense = np.zeros(template.size, dtype=template.dtype)
    dense[index] = values
    return dense.reshape(template.shape)
