"""Everything the coordinator sends: tasks, model broadcasts and replies, events, dead letters.

Tasks and models are encoded by the codec (signed, and models sealed to the registered workers,
in sealed mode); events are plain. The last broadcast model is kept so a model request is
answered with a version that is already in the checkpoint (a restart would take a newer one back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import DecodeError
from common.messages import Event, GlobalModel, ModelRequest, TrainTask
from common.topology import REPLY_TO, Topology
from coordinator.core import Outcome

log = logging.getLogger("fedmq.coordinator")


class Outbox:
    """One job's outgoing messages, encoded once each."""

    def __init__(self, topology: Topology, codec: Codec, fingerprint: str,
                 readers: Callable[[], Any]) -> None:
        self.topology = topology
        self.codec = codec
        self.fingerprint = fingerprint
        self.readers = readers  # who may read a model (sealed mode), asked at every broadcast
        self.model_body: bytes | None = None  # the last broadcast model
        self.model_version = -1

    def task(self, broker: Broker, task: TrainTask) -> None:
        broker.publish("", self.topology.tasks, self.codec.encode(task))

    def broadcast(self, broker: Broker, version: int, weights: Sequence[np.ndarray]) -> None:
        self.model_body = self.codec.encode(
            GlobalModel(version=version, fingerprint=self.fingerprint, weights=tuple(weights)),
            self.readers())
        self.model_version = version
        broker.publish(self.topology.model, "", self.model_body, persistent=False)

    def reply_model(self, broker: Broker, delivery: Delivery) -> None:
        """Answer a late worker's model request with the last broadcast model; then ack it."""
        try:
            self._reply(broker, delivery)
        finally:
            broker.ack(delivery)

    def _reply(self, broker: Broker, delivery: Delivery) -> None:
        try:
            request = wire.decode(delivery.body, ModelRequest, self.codec.max_bytes)
        except DecodeError as exc:
            log.warning("bad model request: %s", exc.reason)
            return
        reply_to = delivery.reply_to or ""
        if not reply_to.startswith(REPLY_TO):
            # replying to any other queue would let a worker make the coordinator publish
            # into queues the worker itself may not write to
            log.warning("ignored model request from %s: reply_to %r is not direct reply-to",
                        request.worker_id, reply_to)
            return
        assert self.model_body is not None, "a session broadcasts before it serves requests"
        log.info("sending version %d to %s", self.model_version, request.worker_id)
        broker.publish("", reply_to, self.model_body, correlation_id=delivery.correlation_id,
                       persistent=False)

    def event(self, broker: Broker, job: str, name: str, **fields: Any) -> None:
        broker.publish(self.topology.events, name, wire.encode(Event(name=name, job=job,
                                                                     fields=fields)),
                       persistent=False)

    def dead_letter(self, broker: Broker, delivery: Delivery, outcome: Outcome) -> None:
        """The rejected body, as it came, with the reason in its headers."""
        broker.publish(self.topology.dead_letter_exchange, "", delivery.body,
                       headers={"x-fedmq-reason": outcome.reason,
                                "x-fedmq-code": outcome.code,
                                "x-fedmq-queue": delivery.queue})
