"""The worker's side of compressed updates: a shaped delta packed as the task asks
(common/compression.py), with top-k's error-feedback residual kept between tasks.

The residual belongs to one task stream: the job and the compression its tasks ask for. It is
added to the next delta, and replaced only once an update is confirmed by the broker (a task
handed back leaves it as it was). It lives in memory: a worker that restarts starts again from
zero, so what top-k had deferred until then (at most the entries of one delta plus the residual
it carried, none of them ever sent) is lost, as a worker's unsent work always is; nothing wrong
is sent. A new job or another compression starts from zero too.
"""

from __future__ import annotations

from typing import Any

from common.arrays import Arrays
from common.compression import Compression, compress, with_feedback
from common.messages import TrainTask
from worker.shaping import Shaped

Stream = tuple[str, Compression]


class DeltaPacker:
    """Packs updates for the WeightUpdate; holds the top-k residual of the current stream."""

    def __init__(self) -> None:
        self.stream: Stream | None = None
        self.residual: Arrays | None = None
        self.pending: tuple[Stream, Arrays] | None = None  # the residual once this update is sent

    def pack(self, task: TrainTask, shaped: Shaped) -> dict[str, Any]:
        """The WeightUpdate fields for `shaped`: weights and is_delta, and when the task asks
        for compression (of a delta) the compressed form and its method."""
        spec = Compression(task.compression, task.topk_fraction)
        self.pending = None
        if not spec.lossy or not shaped.is_delta:
            return {"weights": shaped.weights, "is_delta": shaped.is_delta}
        if spec.method == "topk":
            stream = (task.job, spec)
            sent, rest = with_feedback(shaped.weights, self.residual if self.stream == stream
                                       else None, spec)
            self.pending = (stream, rest)
        else:
            sent = compress(shaped.weights, spec)
        return {"weights": sent.values, "scales": sent.scales, "indices": sent.indices,
                "compression": spec.method, "is_delta": True}

    def forget(self) -> None:
        """The update packed last may or may not have reached the broker (its confirm was lost
        with the connection): drop the residual rather than risk sending its entries twice."""
        self.stream = self.residual = self.pending = None

    def sent(self) -> None:
        """The update packed last is confirmed: its residual is the one carried forward."""
        if self.pending is not None:
            self.stream, self.residual = self.pending
            self.pending = None
