"""Chunked updates in: each chunk spooled durably and acked, the whole body handed on once it is
complete and verified; refused chunks and expired transfers become rejections with a reason.

The coordinator's choice for large updates (see coordinator/spool.py): chunks are acked as soon
as they are on disk (the spool writes them on a thread of its own: `ack_written` acks those
written), never held longer, so the updates consumer's prefetch (at most 16) cannot fill up with
partial transfers; only the delivery that completes a transfer goes through the commit protocol
like a whole update (acked after the checkpoint that holds what it changed).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common import chunks
from common.amqp import Broker, Delivery
from common.chunks import ChunkError
from coordinator.spool import Spool

log = logging.getLogger("fedmq.coordinator")
# (broker, the delivery that completed it or None for one taken back from the spool, body)
BodyHandler = Callable[[Broker, Delivery | None, bytearray], None]
# (broker, the chunk refused or None for an expired transfer, why)
RefusalHandler = Callable[[Broker, Delivery | None, ChunkError], None]


class ChunkIntake:
    """The coordinator's side of chunked updates, over a Spool in `<out>/spool`."""

    def __init__(self, out: Path, *, max_body_bytes: int, max_partials: int,
                 expiry_seconds: float, checkpointed: bool, on_body: BodyHandler,
                 on_refused: RefusalHandler) -> None:
        self.spool = Spool(out / "spool", max_body_bytes=max_body_bytes,
                           max_partials=max_partials, expiry_seconds=expiry_seconds,
                           checkpointed=checkpointed)
        self.on_body = on_body
        self.on_refused = on_refused
        # chunk deliveries (without their bodies) waiting for the write numbered with them
        self.held: deque[tuple[int, Delivery]] = deque()
        self.recovered: list[tuple[str, bytearray]] | None = None

    def start_fresh(self) -> None:
        """A new job: chunks spooled by an earlier one are not ours."""
        self.spool.store.clear()

    def take_back(self, broker: Broker) -> None:
        """First session: hand on the updates a previous run spooled completely (once)."""
        if self.recovered is None:
            self.recovered = self.spool.recover()
        while self.recovered:
            transfer_id, body = self.recovered.pop(0)
            self.on_body(broker, None, body)
            self.spool.handled(transfer_id)

    def chunk(self, broker: Broker, delivery: Delivery) -> None:
        """One chunk delivery: spooled and acked, or (the last) handed on, or refused."""
        try:
            header = chunks.parse(delivery.headers)
            added = self.spool.reassembler.add(header, delivery.body)
        except ChunkError as exc:
            log.warning("refused chunk: %s", exc.reason)
            self.on_refused(broker, delivery, exc)
            return
        if added.status == "complete" and added.body is not None:
            self.on_body(broker, delivery, added.body)  # acks the delivery after the checkpoint
            self.spool.handled(added.transfer_id)
        else:  # acked once its chunk (or, for a duplicate, every chunk before it) is on disk
            self.held.append((self.spool.store.submitted, replace(delivery, body=b"")))
        self.ack_written(broker)

    def ack_written(self, broker: Broker) -> None:
        """Ack the chunks the spool's writer has put on disk since the last call."""
        written = self.spool.store.written()
        while self.held and self.held[0][0] <= written:
            broker.ack(self.held.popleft()[1])

    def attach(self, wake: Callable[[], None]) -> None:
        """A new connection: `wake` ends its wait once a chunk is written (from the writer's
        thread); the chunks the lost one held are redelivered by the broker."""
        self.spool.store.on_written = wake
        self.held.clear()

    def expire(self, broker: Broker) -> None:
        for exc in self.spool.reassembler.expire():
            log.warning("dropped chunked update: %s", exc.reason)
            self.on_refused(broker, None, exc)

    def covered(self) -> list[str]:
        """The transfers a checkpoint captured now holds (see Spool.covered)."""
        return self.spool.covered()

    def saved(self, covered: list[str] | None = None) -> None:
        self.spool.saved(covered)
