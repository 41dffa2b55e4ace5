"""Checks an update must pass before any strategy sees it; each failure names its reason."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from common.arrays import finite
from common.compression import Compressed, Compression, decompress
from common.errors import RejectedUpdate
from common.messages import WeightUpdate


def check_arrays(weights: Sequence[np.ndarray], template: Sequence[np.ndarray]) -> None:
    """Same number of layers, shapes and dtypes as the global model, and only finite values."""
    if len(weights) != len(template):
        raise RejectedUpdate("shape_mismatch", f"{len(weights)} arrays, model has {len(template)}")
    for i, (w, t) in enumerate(zip(weights, template, strict=True)):
        if w.shape != t.shape:
            raise RejectedUpdate("shape_mismatch", f"array {i} is {w.shape}, model has {t.shape}")
        if w.dtype != t.dtype:
            raise RejectedUpdate("dtype_mismatch", f"array {i} is {w.dtype}, model has {t.dtype}")
        if not finite(w):
            raise RejectedUpdate("non_finite", f"NaN or Inf values in array {i}")


def check_update(update: WeightUpdate, *, version: int, max_staleness: int,
                 issued_tasks: set[str] | dict[str, float],
                 template: Sequence[np.ndarray], wants_delta: bool = False) -> int:
    """Raise RejectedUpdate with the reason, or return the update's staleness."""
    if update.task_id not in issued_tasks:
        raise RejectedUpdate("unknown_task", f"{update.task_id!r} was never issued")
    if update.base_version > version:
        raise RejectedUpdate("future_version", f"base version {update.base_version} > {version}")
    if update.base_version < 0:
        raise RejectedUpdate("bad_version", f"negative base version {update.base_version}")
    staleness = version - update.base_version
    if staleness > max_staleness:
        raise RejectedUpdate("stale", f"staleness {staleness} exceeds max_staleness "
                             f"{max_staleness}")
    if update.num_examples <= 0:
        raise RejectedUpdate("bad_num_examples",
                             f"num_examples must be positive, got {update.num_examples}")
    if wants_delta and not update.is_delta:
        raise RejectedUpdate("wrong_form", "this strategy needs deltas, got full weights")
    check_arrays(update.weights, template)
    return staleness


def expand_update(update: WeightUpdate, expected: Compression,
                  template: Sequence[np.ndarray]) -> WeightUpdate:
    """The update with the dense delta its compressed form stands for (common/compression.py
    checks the form against the model before allocating it); refused when it is compressed
    otherwise than the job's tasks ask, or compressed without being a delta."""
    if update.compression != expected.method:
        raise RejectedUpdate("compression_mismatch", f"the update is compressed "
                             f"{update.compression}, this job's tasks ask for {expected.method}")
    if not expected.lossy and not update.scales and not update.indices:
        return update
    if not update.is_delta:
        raise RejectedUpdate("wrong_form", f"{expected.method} compresses deltas, got full weights")
    dense = decompress(Compressed(update.weights, update.scales, update.indices), expected,
                       template)
    return dataclasses.replace(update, weights=tuple(dense), compression="none", scales=(),
                               indices=())
