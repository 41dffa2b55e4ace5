"""The global model a worker holds, and how it gets a newer one: asked for, never broadcast.

A worker asks the coordinator for its current model when it starts and again only when a task
names a newer version than the one it holds, so the broker carries about one model per task
whatever the fleet size (the fanout exchange carries only small version notices). Requests go
to `fedmq.inbox`; replies come through RabbitMQ's direct reply-to on the same channel: a model
larger than the coordinator's chunk size comes as chunks (in order), reassembled in memory
(common/chunks.py: bounded, verified against the body's digest) and only then decoded. While
chunks keep arriving, no new request is sent; a reply that stalls expires, and the worker asks
again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from common import chunks, wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import BrokerUnavailable, DecodeError
from common.messages import GlobalModel, ModelRequest, TrainTask, new_id
from common.topology import MODEL_REQUEST_KEY, REPLY_TO, Topology

log = logging.getLogger("fedmq.worker")
MODEL_REQUEST_RETRY_SECONDS = 5.0
FRESH_MODEL_WAIT_SECONDS = 10.0
MODEL_PARTIALS = 2  # model replies reassembled at once (an old one may still be arriving)


class ModelSource:
    """The freshest global model this worker has received, and its requests for newer ones."""

    def __init__(self, worker_id: str, topology: Topology, codec: Codec,
                 trusted: Mapping[str, Any] | None, fingerprint: str, *,
                 max_body_bytes: int = 2 * 1024 ** 3,
                 too_large: Callable[[str, bytes], bool] = lambda what, body: False,
                 wrong_model: Callable[[GlobalModel], None] = lambda model: None) -> None:
        self.worker_id = worker_id
        self.topology = topology
        self.codec = codec
        self.trusted = trusted  # whose signature a model needs (sealed mode)
        self.fingerprint = fingerprint  # this worker's architecture
        self.too_large = too_large  # True (and the worker stops) for a body over its limit
        self.wrong_model = wrong_model  # another architecture than this worker's: it stops
        self.latest: GlobalModel | None = None
        self.last_chunk_at = 0.0  # when a chunk of a model reply last arrived
        self.reassembler = chunks.Reassembler(  # chunked replies of up to max_body_bytes
            chunks.MemoryStore(), max_body_bytes=max_body_bytes, max_partials=MODEL_PARTIALS,
            expiry_seconds=MODEL_REQUEST_RETRY_SECONDS)

    def _receiving(self) -> bool:
        """A chunked reply is arriving: asking again now would only send the model twice."""
        return time.monotonic() - self.last_chunk_at < MODEL_REQUEST_RETRY_SECONDS

    def fetch(self, broker: Broker, waiting: Callable[[], bool]) -> None:
        """Start this session's reply consumer and ask until a model arrives (or `waiting`
        says to give up)."""
        broker.consume(REPLY_TO, self.on_reply, auto_ack=True)
        next_request = 0.0
        while self.latest is None and waiting():
            if time.monotonic() >= next_request and not self._receiving():
                self.request(broker)
                next_request = time.monotonic() + MODEL_REQUEST_RETRY_SECONDS
            broker.process(0.25)

    def request(self, broker: Broker) -> None:
        """I/O thread: ask the coordinator for its current model (the reply reaches on_reply)."""
        request = ModelRequest(worker_id=self.worker_id,
                               have_version=-1 if self.latest is None else self.latest.version)
        broker.publish(self.topology.inbox, MODEL_REQUEST_KEY, wire.encode(request),
                       reply_to=REPLY_TO, correlation_id=new_id(), persistent=False)

    def on_reply(self, delivery: Delivery) -> None:
        if self.too_large("the model sent by the coordinator", delivery.body):
            return
        body: bytes | bytearray = delivery.body
        if chunks.is_chunk(delivery.headers):
            whole = self._chunk(delivery)
            if whole is None:
                return
            body = whole
        try:
            model = self.codec.decode(body, GlobalModel, self.trusted).message
        except DecodeError as exc:
            log.warning("ignored a model that cannot be opened: %s", exc.reason)
            return
        if model.fingerprint != self.fingerprint:
            self.wrong_model(model)  # it can never train for this job
            return
        if self.latest is None or model.version > self.latest.version:
            self.latest = model

    def _chunk(self, delivery: Delivery) -> bytearray | None:
        """The whole model once its last chunk is in (None until then, or if refused)."""
        self.last_chunk_at = time.monotonic()
        self.reassembler.expire()  # a stalled earlier reply: asked again, it is not coming
        try:
            added = self.reassembler.add(chunks.parse(delivery.headers), delivery.body)
        except chunks.ChunkError as exc:
            log.warning("ignored a chunked model: %s", exc.reason)
            self.last_chunk_at = 0.0  # ask again at once
            return None
        if added.body is not None:
            self.reassembler.release(added.transfer_id)
        return added.body

    def for_task(self, broker: Broker, task: TrainTask, stop: threading.Event) -> GlobalModel:
        """Training thread: the model to train from. The one held if it is at least the task's
        version; else it is fetched (asking again every few seconds), and after
        FRESH_MODEL_WAIT_SECONDS the freshest one held is used (its staleness counts)."""
        return self.at_least(broker, task.min_version, stop)

    def at_least(self, broker: Broker, min_version: int, stop: threading.Event) -> GlobalModel:
        """A thread other than pika's: a model of at least `min_version` (see for_task)."""
        deadline = time.monotonic() + FRESH_MODEL_WAIT_SECONDS
        next_request = 0.0
        while (self.latest is None or self.latest.version < min_version) and \
                time.monotonic() < deadline and not stop.is_set():
            if time.monotonic() >= next_request and not self._receiving():
                try:
                    broker.call_threadsafe(lambda: self.request(broker))
                except BrokerUnavailable:
                    break
                next_request = time.monotonic() + MODEL_REQUEST_RETRY_SECONDS
            time.sleep(0.01)
        assert self.latest is not None, "tasks are taken only once a model is held"
        return self.latest
