"""How an array travels (part of common/wire.py): {dtype, shape, data} with an allowlist of plain
numeric dtypes, never pickle; decoded with `np.frombuffer` (zero copy, read-only), checking dtype,
shape and byte count before any use. Every failure raises `DecodeError` with a reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from common.errors import DecodeError
from common.wire_bulk import Span

MAX_NDIM = 8
ALLOWED_DTYPES = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64")
)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """An array as a msgpack-friendly map; refuses dtypes outside the allowlist."""
    array = np.asarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    if little.dtype.str not in ALLOWED_DTYPES:
        raise DecodeError(f"dtype {array.dtype} is not allowed on the wire")
    # a view, copied once: into the message (wire_bulk.pack)
    data = np.ascontiguousarray(little).reshape(-1).view(np.uint8).data
    return {"dtype": little.dtype.str, "shape": list(little.shape), "data": data}


def decode_array(obj: Any) -> np.ndarray:
    """The inverse of `encode_array`, checking dtype, shape and byte count before any use."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise DecodeError("array must be a map with exactly dtype, shape and data")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise DecodeError(f"dtype {dtype!r} is not allowed")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise DecodeError(f"bad array shape {shape!r}")
    if not isinstance(data, bytes | memoryview | Span):
        raise DecodeError("array data must be bytes")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise DecodeError(f"array data has {len(data)} bytes, shape {shape} needs {expected}")
    source, offset = (data.source, data.offset) if isinstance(data, Span) else (data, 0)
    if isinstance(source, bytearray):  # a reassembled body: its views stay read-only
        source = memoryview(source).toreadonly()
    try:
        return np.frombuffer(source, dtype=np.dtype(dtype), count=math.prod(shape),
                             offset=offset).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size shape with a dimension numpy cannot hold
        raise DecodeError(f"bad array shape {shape!r}: {exc}") from None
