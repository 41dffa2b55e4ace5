"""The only module that imports pika (with amqp_errors.py, its error translation, and
amqp_reads.py, its frame reader): connect, declare, publish with confirms, consume, ack, claim.

pika errors never leave these modules: a lost connection becomes `BrokerUnavailable` (the service
edge reconnects: common/reconnect.py), a refusal becomes `BrokerRefused`. pika's connection is
not thread-safe: other threads hand work to the I/O thread with `call_threadsafe`.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from common import amqp_reads
from common.amqp_errors import BrokerRefused, QueueMismatch, quiet_not_found, translated
from common.broker_urls import split_urls
from common.errors import BrokerUnavailable, ConfigError
from common.topology import QueueSpec, Topology

log = logging.getLogger(__name__)
amqp_reads.apply()


@dataclass(frozen=True)
class Delivery:
    """One message handed to a consumer; ack or reject it through the Broker that delivered it."""

    body: bytes
    tag: int
    queue: str
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None


Handler = Callable[[Delivery], None]


class Broker:
    """A blocking connection with one channel in publisher-confirm mode."""

    def __init__(self, url: str | Sequence[str], *, heartbeat: int = 30, name: str = "fedmq",
                 tls: ssl.SSLContext | None = None) -> None:
        """Connect to the first of `url` (one URL, or a cluster's nodes in the order to try, as a
        sequence or comma-separated: common/broker_urls.py) that answers; `tls`: a verifying
        context, checking each node's own host name."""
        try:
            urls = split_urls(url) if isinstance(url, str) else list(url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        every = [self._parameters(one, heartbeat, name, tls) for one in urls]
        try:
            with translated():  # pika tries each in turn (one attempt each, in order)
                self._connection = pika.BlockingConnection(every)
                self._channel: BlockingChannel = self._open_channel()
        except BrokerUnavailable as exc:
            tried = ", ".join(f"{p.host}:{p.port}" for p in every)
            raise BrokerUnavailable(f"{tried}: {exc}") from None
        self._queues_by_tag: dict[str, str] = {}
        self._on_cancel: dict[str, Callable[[], None]] = {}
        self._claims: list[BlockingChannel] = []

    @staticmethod
    def _parameters(url: str, heartbeat: int, name: str,
                    tls: ssl.SSLContext | None) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.heartbeat = heartbeat
        params.blocked_connection_timeout = 300
        params.connection_attempts = 1
        params.socket_timeout = 10
        params.client_properties = {"connection_name": name}
        if tls is not None:
            params.ssl_options = pika.SSLOptions(tls, params.host)
        return params

    def _open_channel(self, confirms: bool = True) -> BlockingChannel:
        channel = self._connection.channel()
        if confirms:
            channel.confirm_delivery()
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        return channel

    def open_channel(self, *, confirms: bool = True) -> Broker:
        """Another channel on this connection, as a Broker of its own (simulated fleets put many
        workers on one connection; serve them all with this one's `process`).

        `confirms` False: its `publish` returns once the message is written to the socket,
        without the broker's round trip (a confirm costs one, and for a persistent message on
        a quorum queue a disk write): for messages whose loss a sender recovers from by other
        means (the coordinator's transient notices, events and model replies, and its tasks,
        which it issues again when a task's deadline passes or the connection is lost)."""
        sibling = Broker.__new__(Broker)
        sibling._connection, sibling._queues_by_tag, sibling._on_cancel = self._connection, {}, {}
        sibling._claims = []
        with translated():
            sibling._channel = sibling._open_channel(confirms)
        return sibling

    # ------------------------------------------------------------ topology

    def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding of a job (idempotent)."""
        with translated():
            for exchange in topology.exchanges():
                self._channel.exchange_declare(exchange.name, exchange.type, durable=True)
        for queue in topology.queues():
            self.declare_queue(queue)
        with translated():
            for exchange_name, queue_name, key in topology.bindings():
                self._channel.queue_bind(queue_name, exchange_name, routing_key=key)

    def declare_queue(self, queue: QueueSpec) -> None:
        """Declare `queue`. One left by an older fedmq with other arguments (406) is replaced if
        it is unused and empty (or disposable), else refused with what to do."""
        try:
            with translated():
                self._channel.queue_declare(queue.name, durable=queue.durable,
                                            arguments=queue.arguments)
            return
        except BrokerRefused as exc:
            if exc.code != 406:
                raise
            detail = exc.text
        with translated():
            self._channel = self._open_channel()  # the 406 closed the channel
        ready, consumers = self.queue_depth(queue.name)
        if consumers or (ready and not queue.disposable):
            raise QueueMismatch(
                f"queue {queue.name} exists with other arguments than this fedmq declares "
                f"({detail}) and holds {ready} messages and {consumers} consumers, so it is "
                f"left alone: deal with its messages, then delete it (management UI, or "
                f"`rabbitmqctl delete_queue {queue.name}`), or run the job under another --job")
        log.warning("replacing the empty queue %s, declared with other arguments (%s)",
                    queue.name, detail)
        self.delete(queue.name)
        with translated():
            self._channel.queue_declare(queue.name, durable=queue.durable,
                                        arguments=queue.arguments)

    def private_queue(self, exchange: str, routing_key: str = "") -> str:
        """A server-named, exclusive, auto-deleted queue bound to `exchange`."""
        with translated():
            result = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            name: str = result.method.queue
            self._channel.queue_bind(name, exchange, routing_key=routing_key)
        return name

    def exists(self, name: str, kind: str = "queue") -> bool:
        """Whether a queue (or exchange) exists; a passive declare needs no permission."""
        with translated(), quiet_not_found():
            channel = self._connection.channel()
            try:
                if kind == "queue":
                    channel.queue_declare(name, passive=True)
                else:
                    channel.exchange_declare(name, passive=True)
            except pex.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return False
                raise
            channel.close()
        return True

    def queue_depth(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of an existing queue."""
        with translated():
            result = self._channel.queue_declare(queue, passive=True)
        return result.method.message_count, result.method.consumer_count

    def purge(self, queue: str) -> int:
        with translated():
            result = self._channel.queue_purge(queue)
        return int(result.method.message_count)

    def delete(self, name: str, kind: str = "queue") -> None:
        """Delete a queue (or exchange); one that does not exist is not an error."""
        with translated():
            (self._channel.queue_delete if kind == "queue" else self._channel.exchange_delete)(name)

    # ------------------------------------------------------------ publish

    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None, persistent: bool = True) -> None:
        """Publish and wait for the broker's confirm; raises BrokerUnavailable if not confirmed
        (on a channel opened without confirms: once written, see `open_channel`).

        A persistent message (a task, an update, a dead letter) is published `mandatory`: if no
        queue takes it (say, a queue not yet back after a broker restart) the broker returns it
        instead of confirming a message it dropped, and this raises BrokerUnavailable too, so
        the caller's "not confirmed" path (publish again, or leave the task unacked) applies.
        """
        properties = pika.BasicProperties(
            content_type="application/msgpack", delivery_mode=2 if persistent else 1,
            headers=headers, reply_to=reply_to, correlation_id=correlation_id)
        with translated():
            self._channel.basic_publish(exchange, routing_key, body, properties,
                                        mandatory=persistent)

    # ------------------------------------------------------------ consume

    def consume(self, queue: str, handler: Handler, *, prefetch: int = 1,
                auto_ack: bool = False, exclusive: bool = False,
                on_cancel: Callable[[], None] | None = None) -> str:
        """Start consuming `queue`; `handler` runs on the I/O thread for each delivery.

        `on_cancel` runs if the broker cancels this consumer (for example: the queue was deleted).
        """

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            handler(Delivery(body=body, tag=method.delivery_tag, queue=queue,
                             headers=dict(props.headers or {}), reply_to=props.reply_to,
                             correlation_id=props.correlation_id))

        with translated():
            self._channel.basic_qos(prefetch_count=prefetch)
            tag: str = self._channel.basic_consume(queue, on_message, auto_ack=auto_ack,
                                                   exclusive=exclusive)
        self._queues_by_tag[tag] = queue
        if on_cancel is not None:
            self._on_cancel[tag] = on_cancel
        return tag

    def claim(self, queue: str, on_lost: Callable[[], None] | None = None) -> bool:
        """Hold the one exclusive consumer of `queue` (on a channel of its own) for the life of
        the connection: a lock the broker frees the moment the connection dies. False if
        another connection holds it or the queue does not exist. Nothing is ever held unacked
        (auto-ack), so consumer_timeout never applies. `on_lost` runs if the broker cancels it
        (the queue was deleted)."""
        with translated(), quiet_not_found():
            channel = self._connection.channel()
            try:
                channel.basic_consume(queue, lambda *_: None, auto_ack=True, exclusive=True)
            except pex.ChannelClosedByBroker as exc:
                if exc.reply_code in (403, 404):
                    return False
                raise
        if on_lost is not None:
            channel.add_on_cancel_callback(lambda _frame: on_lost())
        self._claims.append(channel)
        return True

    def _on_cancelled_by_broker(self, method_frame: Any) -> None:
        tag = method_frame.method.consumer_tag
        log.warning("the broker cancelled the consumer of %s", self._queues_by_tag.get(tag, tag))
        callback = self._on_cancel.pop(tag, None)
        if callback is not None:
            callback()

    def cancel(self, consumer_tag: str) -> None:
        with translated():
            self._channel.basic_cancel(consumer_tag)

    def get(self, queue: str) -> Delivery | None:
        """Fetch one message without a consumer (tools and tests); it must be acked or rejected."""
        with translated():
            method, props, body = self._channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        return Delivery(body=body, tag=method.delivery_tag, queue=queue,
                        headers=dict(props.headers or {}), reply_to=props.reply_to,
                        correlation_id=props.correlation_id)

    def ack(self, delivery: Delivery) -> None:
        with translated():
            self._channel.basic_ack(delivery.tag)

    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        with translated():
            self._channel.basic_nack(delivery.tag, requeue=requeue)

    # ------------------------------------------------------------ loop

    def process(self, seconds: float) -> None:
        """Serve the connection (deliveries, heartbeats, thread-safe callbacks) for `seconds`."""
        with translated():
            self._connection.process_data_events(time_limit=seconds)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the I/O thread at its next `process` call; safe from any thread."""
        with translated():
            self._connection.add_callback_threadsafe(callback)

    def wake(self) -> None:
        """From any thread: end a `process` wait early (a thread's result is ready); nothing if
        the connection is gone."""
        with contextlib.suppress(Exception):
            self._connection.add_callback_threadsafe(lambda: None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection.is_open:
                self._connection.close()
