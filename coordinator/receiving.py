"""What happens to each update that reaches the coordinator, whole or in chunks.

A whole body is decoded (common/codec.py), admitted (admission.py: signer, replay, privacy
budget), checked for task ownership and judged by the core; its outcome is acted on (a dead
letter and an event for a rejection, a new version for an applied update) and its delivery is
acked through the commit protocol (after the checkpoint). Chunked bodies are spooled and handed
on whole by the chunk intake (chunk_intake.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common import chunks
from common.amqp import Broker, Delivery
from common.chunks import ChunkError
from common.codec import Codec, Opened
from common.errors import DecodeError, RejectedUpdate
from common.messages import WeightUpdate
from common.settings import CoordinatorSettings
from coordinator.admission import Admission
from coordinator.chunk_intake import ChunkIntake
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore, Outcome
from coordinator.lifecycle import JobRecord
from coordinator.outbox import Outbox
from coordinator.poison import CRASHES, PoisonJournal, digest
from coordinator.progress import Progress

log = logging.getLogger("fedmq.coordinator")
VersionMade = Callable[[int | None, str], None]  # (staleness, worker id) of a new version
UPDATE_PREFETCH = 16  # deliveries at most, and at most PREFETCH_BYTES of them
PREFETCH_BYTES = 256 * 1024 * 1024


def update_prefetch(update_bytes: int) -> int:
    """Prefetch of the updates consumer: RabbitMQ bounds a prefetch in messages only, so the
    count follows the model's update size (16 x 40 MB bodies were 640 MB of the coordinator's
    memory); at least 2, so one delivery is on its way while another is handled."""
    return max(2, min(UPDATE_PREFETCH, PREFETCH_BYTES // max(1, update_bytes)))


class Receiver:
    """The coordinator's update path, from delivery to outcome."""

    def __init__(self, settings: CoordinatorSettings, codec: Codec, admission: Admission,
                 core: CoordinatorCore, outbox: Outbox, commit: Commit, progress: Progress,
                 record: JobRecord, version_made: VersionMade) -> None:
        self.job = settings.job
        self.max_message_bytes = settings.max_message_bytes
        self.codec, self.admission, self.core = codec, admission, core
        self.outbox, self.commit, self.progress, self.record = outbox, commit, progress, record
        self.version_made = version_made
        self.intake = ChunkIntake(settings.out, max_body_bytes=settings.max_body_bytes,
                                  max_partials=settings.max_partial_transfers,
                                  expiry_seconds=settings.chunk_expiry_seconds,
                                  checkpointed=settings.checkpoint, on_body=self._on_body,
                                  on_refused=self._on_chunk_refused)
        self.journal = PoisonJournal(settings.out)
        self.last_update_at = 0.0
        self.closed = False  # the job has ended: updates still arriving are refused
        self.longest_training = 0.0  # seconds, as reported by updates (capped at a minute)

    def quiet(self) -> bool:
        """No update for longer than the longest training seen (plus a second): a task
        redelivered to another worker would have answered by now."""
        return time.monotonic() - self.last_update_at > self.longest_training + 1.0

    def on_update(self, broker: Broker, delivery: Delivery) -> None:
        if chunks.is_chunk(delivery.headers):
            self.intake.chunk(broker, delivery)  # calls _on_body once the update is whole
        elif len(delivery.body) > self.max_message_bytes:  # a sender would have chunked it
            self.record.bytes_received += len(delivery.body)
            self._handle_outcome(broker, delivery, None, self.core.reject(
                "decode_error", f"message body of {len(delivery.body)} bytes exceeds the limit "
                                f"of {self.max_message_bytes} (larger bodies travel in chunks)"))
            self._ack(broker, delivery)
        else:
            self._on_body(broker, delivery, delivery.body)

    def _on_body(self, broker: Broker, delivery: Delivery | None,
                 body: bytes | bytearray) -> None:
        """A whole update (`delivery` None: taken back from the spool after a crash)."""
        self.record.bytes_received += len(body)
        self.last_update_at = time.monotonic()
        self.progress.received()
        key = digest(body)
        if self.journal.crashes(key) >= CRASHES:  # coordinator/poison.py
            self._handle_outcome(broker, delivery, None, self.core.reject(
                "poison", f"the coordinator died {CRASHES} times while handling this body"))
            self._ack(broker, delivery)
            return
        self.journal.begin(key)
        try:
            opened = self.codec.decode(body, WeightUpdate, self.admission.trusted())
        except DecodeError as exc:
            self._handle_outcome(broker, delivery, None,
                                 self.core.reject(exc.code, exc.reason, exc.task_id))
        else:
            self._judge(broker, delivery, opened)
        self.journal.end()
        self._ack(broker, delivery)

    def _on_chunk_refused(self, broker: Broker, delivery: Delivery | None,
                          exc: ChunkError) -> None:
        self._handle_outcome(broker, delivery, None, self.core.reject("chunks", exc.reason))
        self._ack(broker, delivery)

    def _ack(self, broker: Broker, delivery: Delivery | None) -> None:
        if delivery is None:
            self.commit.changed()
        else:
            self.commit.ack(broker, delivery)

    def _judge(self, broker: Broker, delivery: Delivery | None,
               opened: Opened[WeightUpdate]) -> None:
        """The checks before the core's validation (admission.py: an update accepted before
        is a duplicate; else signer and replay in sealed mode, task ownership, the worker's
        privacy budget), then the core's decision."""
        update = opened.message
        if self.closed and update.update_id not in self.core.accepted_ids:
            self._handle_outcome(broker, delivery, None, self.core.reject(
                "job_finished", "the job had ended when it arrived", update.task_id,
                update.update_id))
            return
        try:
            self.admission.admit(opened, self.core.accepted_ids, self.core.claim)
        except RejectedUpdate as exc:
            self._handle_outcome(broker, delivery, None, self.core.reject(
                exc.code, exc.reason, update.task_id, update.update_id))
            return
        self.longest_training = max(self.longest_training, min(update.train_seconds, 60.0))
        self._handle_outcome(broker, delivery, update, self.core.handle(update))

    def _handle_outcome(self, broker: Broker, delivery: Delivery | None,
                        update: WeightUpdate | None, outcome: Outcome) -> None:
        self.progress.outcome(outcome, update)
        if outcome.kind == "rejected":
            log.warning("rejected update (%s)", outcome.reason)
            if delivery is not None:
                self.outbox.dead_letter(broker, delivery, outcome)
            self.outbox.event(broker, self.job, "rejected", code=outcome.code,
                              reason=outcome.reason)
        elif outcome.kind == "duplicate":
            log.info("ignored duplicate update %s", update.update_id if update else "?")
        elif outcome.kind == "applied" and update is not None:
            self.version_made(outcome.staleness, update.worker_id)
