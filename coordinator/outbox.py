"""What the coordinator sends: tasks, version notices, models on request, events, dead letters.

Model traffic grows with tasks, not with workers x versions: each new version is announced on the
`fedmq.model` fanout exchange as a small `ModelNotice`, and a worker fetches the model it needs
(once per task, only when the one it holds is older than the task's `min_version`) with a model
request answered through RabbitMQ's direct reply-to. The model served is always the last
announced one: a version that is in the checkpoint (a restart would take a newer one back). It is
encoded once per version, when it is first asked for, as pieces (common/codec.py): in plain mode
small headers and views of the weights themselves, from which each chunk is copied as it is sent,
so no encoded copy of the model stays in memory between requests (a 1 GB copy of a 1 GB model:
docs/benchmarks.md); in sealed mode the sealed body, whole (it is encrypted and signed as one).
Nor is a model sent in chunks held twice: once a newer version is made, the announced one is
let go (`superseded`), and model requests wait for the next announcement (its checkpoint is
being written: seconds for a 1 GB model), which they get.

Tasks, notices, events and model replies go out on a channel without publisher confirms
(`attach`): profiled in `fedmq bench scale`, waiting for a confirm per task and per model reply
took 59 % of the coordinator's wall time at 4 MB. None of them needs one: notices, events and
replies are transient (a worker asks again), and a task that never arrives is issued again at
its deadline, at a resume, or after a lost connection (session.py). Dead letters keep their
confirm (the copy of a refused body is kept once its delivery is acked).

Tasks, notices and models are encoded by the codec (signed, and models sealed to the registered
workers, in sealed mode); events are plain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import chunks, limits, wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import DecodeError
from common.messages import (
    Event,
    GlobalModel,
    ModelNotice,
    ModelRequest,
    TrainTask,
    WeightUpdate,
    new_id,
)
from common.topology import REPLY_TO, Topology
from coordinator.core import Outcome

log = logging.getLogger("fedmq.coordinator")


class Outbox:
    """One job's outgoing messages, encoded once each."""

    def __init__(self, topology: Topology, codec: Codec, fingerprint: str,
                 readers: Callable[[], Any], chunk_bytes: int = limits.DEFAULT_CHUNK_BYTES,
                 dead_body_bytes: int = 64 * 1024) -> None:
        self.topology = topology
        self.dead_body_bytes = dead_body_bytes  # a dead letter keeps at most this much body
        self.chunk_bytes = chunk_bytes  # a model larger than this is sent as chunks
        self.codec = codec
        self.fingerprint = fingerprint
        self.readers = readers  # who may read a model (sealed mode), asked at every encoding
        self.model_version = -1
        self.model_weights: Sequence[np.ndarray] | None = ()  # the last announced version's
        self.waiting: list[Delivery] = []  # model requests while those weights are let go
        self.model_pieces: list[bytes | memoryview] | None = None  # ... encoded, once asked for
        self.model_digest: str | None = None  # ... and its SHA-256, when it is sent in chunks
        self.unconfirmed: Broker | None = None  # the session's channel without confirms

    def attach(self, broker: Broker) -> None:
        """A new session: open its channel without confirms (see the module docstring)."""
        self.unconfirmed = broker.open_channel(confirms=False)
        self.waiting = []  # deliveries of the lost connection: the broker delivers them again

    def _out(self, broker: Broker) -> Broker:
        return broker if self.unconfirmed is None else self.unconfirmed

    def check_model_fits(self, weights: Sequence[np.ndarray], name: str, limit: int) -> int:
        """Stop before declaring anything if the model cannot travel: encoded as it is sent, and
        as a worker's update of it (a little larger), it must fit the body limit (`limit`,
        --max-body-bytes; it travels in chunks). Raises ConfigError. The messages are encoded
        with empty arrays first: with the data's bytes and a generous allowance per array that
        bounds their size, and only a model near the limit is encoded whole (a 1 GB model
        would cost two more copies of itself at start). Returns the larger size, or that bound."""
        def messages(arrays: tuple[np.ndarray, ...]) -> tuple[bytes, bytes]:
            model = self.codec.encode(GlobalModel(version=0, fingerprint=self.fingerprint,
                                                  weights=arrays), self.readers())
            return model, self.codec.encode(WeightUpdate(
                update_id=new_id(), worker_id="w" * 64, task_id=new_id(), base_version=0,
                num_examples=0, train_seconds=0.0, weights=arrays))
        empty = tuple(np.zeros(0, w.dtype) for w in weights)
        bound = max(map(len, messages(empty))) + sum(w.nbytes + 128 for w in weights)
        if bound <= limit:
            return bound
        parameters = sum(int(w.size) for w in weights)
        largest = max(messages(tuple(weights)), key=len)
        limits.check_fits(f"the model {name!r} ({parameters} parameters)", largest, limit)
        return len(largest)

    def task(self, broker: Broker, task: TrainTask) -> None:
        self._out(broker).publish("", self.topology.tasks, self.codec.encode(task))

    def broadcast(self, broker: Broker, version: int, weights: Sequence[np.ndarray],
                  current: bool = True) -> None:
        """Announce `version` (its weights are kept, not copied: the core replaces, never
        mutates, its arrays), answer the requests waiting for a model with it, and answer
        model requests with it from now on; unless a newer version was made since (`current`
        False: then it is let go after the waiting requests got it, see `superseded`)."""
        self.model_version, self.model_weights, self.model_pieces = version, weights, None
        self.model_digest = None
        notice = ModelNotice(version=version, fingerprint=self.fingerprint)
        self._out(broker).publish(self.topology.model, "", self.codec.encode(notice),
                                  persistent=False)
        # Before letting it go: a request must not wait for an announcement that is still the
        # newest version, which a busy job (updates applied while each checkpoint is written)
        # may not make for a long time. The weights are alive for this call anyway, and the
        # chunks are copied from them one at a time.
        waiting, self.waiting = self.waiting, []
        for delivery in waiting:
            self.reply_model(broker, delivery)
        if not current:
            self.superseded()

    def superseded(self) -> None:
        """A version newer than the announced one was made: let go of the announced one if it
        is sent in chunks (a large model is not kept twice); model requests then wait for the
        next announcement."""
        if self.model_weights and sum(w.nbytes for w in self.model_weights) > self.chunk_bytes:
            self.model_weights, self.model_pieces, self.model_digest = None, None, None

    def model(self) -> list[bytes | memoryview]:
        """The last announced model, encoded as pieces that join into its body (once per
        version; see the module docstring)."""
        assert self.model_weights is not None, "requests wait while the weights are let go"
        if self.model_pieces is None:
            self.model_pieces = self.codec.encode_pieces(
                GlobalModel(version=self.model_version, fingerprint=self.fingerprint,
                            weights=tuple(self.model_weights)), self.readers())
        return self.model_pieces

    def reply_model(self, broker: Broker, delivery: Delivery) -> None:
        """Answer a late worker's model request with the last broadcast model; then ack it
        (while that model is let go, the request waits for the next one: `superseded`)."""
        if self.model_weights is None:
            for older in [d for d in self.waiting if d.reply_to == delivery.reply_to]:
                self.waiting.remove(older)  # the same worker asking again: one reply will do
                broker.ack(older)
            self.waiting.append(delivery)
            return
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
        assert self.model_version >= 0, "a session announces a version before it serves requests"
        log.debug("sending version %d to %s (it holds %d)", self.model_version,
                  request.worker_id, request.have_version)
        pieces, broker = self.model(), self._out(broker)
        if sum(memoryview(piece).nbytes for piece in pieces) <= self.chunk_bytes:
            # a model sent whole is joined once per version and kept (small: it fits a chunk)
            first = pieces[0]
            body = first if len(pieces) == 1 and isinstance(first, bytes) else b"".join(pieces)
            self.model_pieces = [body]
            broker.publish("", reply_to, body, correlation_id=delivery.correlation_id,
                           persistent=False)
            return
        if self.model_digest is None:
            self.model_digest = chunks.digest_pieces(pieces)
        # all chunks in order on this channel, a new transfer id per reply (a worker that
        # gave up on an earlier reply asks again and gets a fresh transfer)
        for header, part in chunks.split_pieces(pieces, self.chunk_bytes, self.model_digest):
            broker.publish("", reply_to, part, headers=header.fields(),
                           correlation_id=delivery.correlation_id, persistent=False)

    def event(self, broker: Broker, job: str, name: str, **fields: Any) -> None:
        body = wire.encode(Event(name=name, job=job, fields=fields))
        self._out(broker).publish(self.topology.events, name, body, persistent=False)

    def dead_letter(self, broker: Broker, delivery: Delivery, outcome: Outcome) -> None:
        """The rejected body (of a chunked one: the chunk that completed or broke it), as it
        came (cut to dead_body_bytes, its size kept), with the reason in its headers."""
        body, cut = delivery.body, len(delivery.body) > self.dead_body_bytes
        broker.publish(self.topology.dead_letter_exchange, "", body[:self.dead_body_bytes],
                       headers={**{key: value for key, value in delivery.headers.items()
                                   if key.startswith("x-fedmq-")},
                                "x-fedmq-reason": outcome.reason,
                                "x-fedmq-code": outcome.code,
                                **({"x-fedmq-truncated-from": len(body)} if cut else {}),
                                "x-fedmq-queue": delivery.queue})
