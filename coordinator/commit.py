"""The commit protocol: checkpoint, then publish, then ack; the order that loses nothing.

What the updates received since the last commit changed is written to the checkpoint first; only
then are the new tasks published, the new versions announced and the updates acked. A crash at
any moment therefore loses nothing that was acked, and an update applied but not yet acked is
redelivered and recognised by its id (or, if the checkpoint that holds it was not written, applied
again: the checkpoint never holds it then, and no version made from it was announced).

The checkpoint is written on a thread of its own while the loop goes on consuming (a group
commit). `run` captures the state (on the loop's thread, so it is consistent: the arrays are
referenced, never copied, because the core replaces and never mutates them) together with what
the capture covers (the tasks issued, versions made and deliveries handled until then) and hands
the write to the writer; once the write is on disk, the next `run` publishes, announces and acks
exactly what that checkpoint covers, and captures the next one. At most one write is in progress:
updates that arrive meanwhile wait for the next one, so the number of checkpoints follows the
disk (a slow, large write covers more updates) and never the number of updates, and the loop never
waits for the disk unless the updates' prefetch is full of deliveries awaiting their checkpoint.
Profiled in `fedmq bench scale` (docs/benchmarks.md), writing the checkpoint on the loop's
thread took 10 % of the coordinator's wall time at 4 MB.

Capturing walks the job's bookkeeping, which grows with the job (accepted ids, the history: a few
ms per 10,000 updates). So that it never takes more than about a tenth of the loop's time however
long the job, the next capture waits `spacing` times the last one's measured cost after it (a
job of a million updates gets fewer, larger checkpoints, not a slower loop).

Why not a journal of update ids between model writes: an id alone cannot rebuild the model after
a crash (FedAsync needs the update's weights), so a journal would have to hold the update bodies,
as many bytes as the model per update; and a version announced before the model that makes it is
on disk could be made again differently after a crash. Holding acks, tasks and announcements
until the checkpoint that covers them is on disk needs neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from common.amqp import Broker, Delivery
from common.arrays import Arrays
from common.messages import TrainTask


@dataclass(frozen=True)
class Snapshot:
    """A captured checkpoint: `write` puts it on disk (any thread); `saved` runs on the loop's
    thread once it is there; `model` is the (version, weights) it holds, the one to announce."""

    write: Callable[[], None]
    saved: Callable[[], None]
    model: tuple[int, Arrays]


@dataclass
class Batch:
    """What one checkpoint covers: carried out once it is on disk."""

    tasks: list[TrainTask] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)  # "version" event fields
    acks: list[Delivery] = field(default_factory=list)


SPACING = 9.0  # captures take at most 1 / (1 + SPACING) of the loop's time
Announce = Callable[[Broker, list[dict[str, Any]], tuple[int, Arrays]], None]


@dataclass
class Commit:
    """What is decided but not yet carried out; `run` carries it out in the safe order."""

    capture: Callable[[], Snapshot] | None  # None: no checkpoint (acks go out at once)
    publish_task: Callable[[Broker, TrainTask], None]
    announce: Announce  # (broker, versions, the model to announce)
    current_model: Callable[[], tuple[int, Arrays]]  # without a checkpoint
    wake: Callable[[], None] = lambda: None  # from the writer: a write is done (thread-safe)
    dirty: bool = False
    pending: Batch = field(default_factory=Batch)
    writing: tuple[Future[None], Snapshot, Batch] | None = None
    spacing: float = SPACING
    capture_cost: float = 0.0  # seconds the last capture took
    captured_at: float = float("-inf")  # time.monotonic() when it ended
    _writer: ThreadPoolExecutor | None = None

    def changed(self) -> None:
        """Something the checkpoint holds has changed."""
        self.dirty = True

    def task(self, task: TrainTask) -> None:
        self.pending.tasks.append(task)
        self.dirty = True

    def version(self, fields: dict[str, Any]) -> None:
        self.pending.versions.append(fields)
        self.dirty = True

    def ack(self, broker: Broker, delivery: Delivery) -> None:
        """Ack once the checkpoint holds what the delivery changed (at once without one)."""
        self.dirty = True
        if self.capture is None:
            broker.ack(delivery)
        else:  # held without its body: a handled 40 MB update need not wait in memory too
            self.pending.acks.append(replace(delivery, body=b""))

    def forget_acks(self) -> None:
        """A new connection: the deliveries of the lost one are redelivered by the broker."""
        self.pending.acks = []
        if self.writing is not None:
            self.writing[2].acks = []

    @property
    def awaiting(self) -> int:
        """Deliveries handled and not yet acked (they wait for their checkpoint)."""
        return len(self.pending.acks) + (0 if self.writing is None else len(self.writing[2].acks))

    def run(self, broker: Broker) -> None:
        """Carry out a checkpoint that is on disk; start writing the next if anything changed."""
        if self.writing is not None:
            if not self.writing[0].done():
                return
            self._finish(broker)
        if not self.dirty or self._too_soon():
            return
        if self.capture is None:
            self.dirty = False
            self._carry_out(broker, self.pending, self.current_model())
            self.pending = Batch()
            return
        began = time.monotonic()
        snapshot, batch = self.capture(), self.pending
        self.captured_at = time.monotonic()
        self.capture_cost = self.captured_at - began
        self.dirty, self.pending = False, Batch()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="fedmq-checkpoint")
        future = self._writer.submit(snapshot.write)
        future.add_done_callback(lambda _: self.wake())
        self.writing = (future, snapshot, batch)

    def _too_soon(self) -> bool:
        since = time.monotonic() - self.captured_at
        return self.capture is not None and since < self.capture_cost * self.spacing

    def flush(self, broker: Broker) -> None:
        """Everything changed so far on disk and carried out before this returns."""
        if self.writing is not None:
            self.writing[0].result()
        self.captured_at = float("-inf")  # now, however soon
        self.run(broker)
        if self.writing is not None:
            self.writing[0].result()
            self._finish(broker)

    def close(self) -> None:
        """Wait for a write in progress (its batch is not carried out) and stop the writer."""
        if self.writing is not None:
            self.writing[0].exception()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _finish(self, broker: Broker) -> None:
        assert self.writing is not None
        future, snapshot, batch = self.writing
        self.writing = None
        future.result()  # a failed write (disk full) ends the process like before: nothing acked
        snapshot.saved()
        self._carry_out(broker, batch, snapshot.model)

    def _carry_out(self, broker: Broker, batch: Batch, model: tuple[int, Arrays]) -> None:
        while batch.tasks:
            self.publish_task(broker, batch.tasks[0])
            batch.tasks.pop(0)
        if batch.versions:
            self.announce(broker, batch.versions, model)
            batch.versions = []
        for delivery in batch.acks:
            broker.ack(delivery)
        batch.acks = []
