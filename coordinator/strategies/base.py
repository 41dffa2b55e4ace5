"""What every strategy shares: the validated update it is given and the interface it offers.

A strategy folds validated updates into the global model. It is pure math over lists of numpy
arrays (common/arrays.py): no broker, no TensorFlow, no I/O; the coordinator's core calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from common.arrays import Arrays


@dataclass(frozen=True)
class Contribution:
    """What a strategy needs to know about one validated update."""

    weights: Sequence[np.ndarray]
    is_delta: bool
    staleness: int
    num_examples: int
    worker_id: str = ""
    update_id: str = ""       # secure aggregation: the id the helper's rules are about
    helper_seed: bytes = b""  # ... and the mask seed sealed to the helper


def as_model(current: Sequence[np.ndarray], update: Contribution) -> Sequence[np.ndarray]:
    """The update as full model weights: a delta is added to the current model."""
    if not update.is_delta:
        return update.weights
    return [c + d for c, d in zip(current, update.weights, strict=True)]


class Strategy(Protocol):
    """Folds validated updates into the global model.

    `submit` returns the new global weights when the model changed (the coordinator then bumps the
    version and broadcasts), or None when the update was only buffered. `buffered` counts updates
    held but not yet in the model; `withheld` counts buffers a strategy refused to apply (central
    DP's budget); `wants_delta` asks workers for trained - base instead of the trained weights;
    `synchronous` strategies get a new round of tasks only after the last one; while `stepping`,
    a step is under way outside `submit` (secure aggregation: a full buffer waits for the
    helper), and no task is issued: it would train on the version that step is about to replace.
    """

    name: str
    wants_delta: bool
    synchronous: bool

    @property
    def buffered(self) -> int: ...

    @property
    def withheld(self) -> int: ...

    @property
    def stepping(self) -> bool: ...

    def submit(self, current: Arrays, update: Contribution) -> Arrays | None: ...

    def flush(self, current: Arrays) -> Arrays | None:
        """At the end of a job: fold in whatever is still buffered (None if nothing is)."""
        ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...
