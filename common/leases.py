"""Shard leases through the broker: identical worker replicas each obtain a distinct shard.

The coordinator fills the `fedmq.shards` queue with one `ShardLease` token per shard when a job
starts. A worker takes one token and never acks it: the broker counts it as unacked for as long as
the worker's connection lives, and returns it to the queue the moment the worker dies (kill -9,
crash, lost network). The next worker waiting on the queue receives it, so a replacement takes
over the dead worker's shard. Extra workers simply wait for a token.

Refilling deletes the queue first, which revokes the tokens still held: the broker cancels their
holders' consumers, and those workers lease again from the fresh tokens. This way a new job never
has two tokens for the same shard.
"""

from __future__ import annotations

import logging
import threading

from common import wire
from common.amqp import Broker, Delivery
from common.errors import BrokerUnavailable, DecodeError
from common.messages import ShardLease
from common.topology import Topology

log = logging.getLogger("fedmq.leases")


def refill(broker: Broker, topology: Topology, num_shards: int) -> None:
    """Coordinator side: replace every token of the job with fresh tokens 0 .. num_shards-1."""
    broker.delete_queue(topology.shards)
    broker.declare(topology)
    for index in range(num_shards):
        token = ShardLease(shard_index=index, num_shards=num_shards, job=topology.job)
        broker.publish("", topology.shards, wire.encode(token))
    log.info("filled %s with %d shard leases", topology.shards, num_shards)


class Lease:
    """Worker side: hold one token of `topology.shards` for the life of the connection."""

    def __init__(self, broker: Broker, topology: Topology) -> None:
        self.broker = broker
        self.topology = topology
        self.token: ShardLease | None = None
        self.revoked = threading.Event()

    def acquire(self, stop: threading.Event, poll: float = 0.25) -> ShardLease | None:
        """Wait for a token (serving the connection); None if `stop` or a revocation comes first."""
        self.broker.consume(self.topology.shards, self._on_token, prefetch=1,
                            on_cancel=self.revoked.set)
        while self.token is None and not stop.is_set() and not self.revoked.is_set():
            self.broker.process(poll)
        return self.token

    def check(self) -> None:
        """Raise BrokerUnavailable (so the session starts over and leases again) if revoked."""
        if self.revoked.is_set():
            raise BrokerUnavailable("shard lease revoked: a new job refilled the shard leases")

    def _on_token(self, delivery: Delivery) -> None:
        try:
            token = wire.decode(delivery.body, ShardLease)
        except DecodeError as exc:
            log.warning("dropping a bad shard token: %s", exc.reason)
            self.broker.reject(delivery, requeue=False)
            return
        # Deliberately never acked: the unacked token IS the lease.
        self.token = token
