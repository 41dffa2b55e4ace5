"""FedAsync (Xie, Koyejo, Gupta 2019): every update is mixed into the model as it arrives.

x <- (1 - alpha_t) x + alpha_t x_new, with alpha_t = alpha * s(staleness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.arrays import Arrays
from coordinator.strategies.base import Contribution, as_model
from coordinator.strategies.staleness import StalenessFn

BLOCK = 1 << 20  # elements mixed at a time into an update's own memory
SMALL_BLOCK = 1 << 15  # elements mixed at a time into a new array (128 KiB of float32)


def mix(current: Sequence[np.ndarray], new: Sequence[np.ndarray], weight: float) -> Arrays:
    """(1 - weight) * current + weight * new, layer by layer, keeping each layer's dtype.

    The sum is taken in place: the same arithmetic, bit for bit, with one temporary array
    fewer (about 20 % faster on 10M float32 parameters here; the step was 17 % of the
    coordinator's busy time at 40 MB in `fedmq bench scale`). A layer of `new` that is a
    body's own memory (`spare`) is written over instead of a new array being made: the new
    model then costs no memory beyond the update's (a 1 GB model: docs/benchmarks.md)."""
    mixed = []
    for c, n in zip(current, new, strict=True):
        same = np.result_type(c, n, weight) == c.dtype == n.dtype
        out = spare(n) if same else None
        if out is None and same:
            out = _blocked(c, n, weight)
        elif out is None:
            out = np.multiply(c, 1.0 - weight)
            out += np.multiply(n, weight).astype(out.dtype, copy=False)
        else:  # the same two products and sum (in the other order: the same bits)
            np.multiply(out, weight, out=out)
            flat, current_flat = out.reshape(-1), c.reshape(-1)
            for start in range(0, flat.size, BLOCK):  # a temporary of a block, not a layer
                block = slice(start, start + BLOCK)
                flat[block] += np.multiply(current_flat[block], 1.0 - weight)
        mixed.append(out.astype(c.dtype, copy=False))
    return mixed


def _blocked(current: np.ndarray, new: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * current + weight * new into a new array, the same operations as the whole
    layers' (bit for bit) but a cache-sized block at a time, through one small temporary
    instead of two layer-sized ones: a fresh layer-sized array costs a page fault per page
    (the step was 12 % of the coordinator's loop at 4 MB in `fedmq bench scale`)."""
    out = np.empty(current.shape, current.dtype)
    flat, current_flat, new_flat = out.reshape(-1), current.reshape(-1), new.reshape(-1)
    scratch = np.empty(min(SMALL_BLOCK, flat.size), out.dtype)
    for start in range(0, flat.size, SMALL_BLOCK):
        block = slice(start, start + SMALL_BLOCK)
        product = scratch[:flat[block].size]
        np.multiply(current_flat[block], 1.0 - weight, out=flat[block])
        np.multiply(new_flat[block], weight, out=product)
        flat[block] += product
    return out


def spare(array: np.ndarray) -> np.ndarray | None:
    """`array`'s memory, writable, if it is a read-only view of a bytearray: common/wire.py
    decodes a body reassembled from chunks so, and that body is the update's alone (the
    coordinator reads nothing of it after the step). None for any other array."""
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    if (array.flags.writeable or not array.flags.c_contiguous
            or not isinstance(base, memoryview) or not isinstance(base.obj, bytearray)):
        return None
    body = np.frombuffer(base.obj, np.uint8)
    offset = array.__array_interface__["data"][0] - body.__array_interface__["data"][0]
    return np.frombuffer(base.obj, array.dtype, array.size, offset).reshape(array.shape)


def fedasync_step(current: Sequence[np.ndarray], new: Sequence[np.ndarray], alpha: float,
                  staleness: int, s: StalenessFn) -> Arrays:
    """One FedAsync update: x <- (1 - alpha_t) x + alpha_t x_new with alpha_t = alpha * s(t)."""
    return mix(current, new, alpha * s(staleness))


@dataclass
class FedAsync:
    """Apply every update at once, weighted by alpha * s(staleness)."""

    alpha: float
    staleness_fn: StalenessFn
    name: str = "fedasync"
    wants_delta: bool = False
    synchronous: bool = False
    stepping: bool = False  # (a step outside submit: base.py)
    buffered: int = 0  # nothing is ever held back
    withheld: int = 0

    def submit(self, current: Arrays, update: Contribution) -> Arrays:
        return fedasync_step(current, as_model(current, update), self.alpha, update.staleness,
                             self.staleness_fn)

    def flush(self, current: Arrays) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None
