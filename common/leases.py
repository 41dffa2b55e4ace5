"""Shard leases through the broker: identical worker replicas each obtain a distinct shard.

The coordinator declares one empty queue per shard, `fedmq.<job>.shards.<i>`, when a job starts.
A worker leases shard i by holding the one exclusive consumer of that queue (`Broker.claim`):
the broker refuses a second one, and lets go the moment the worker's connection dies (kill -9,
crash, lost network: at most two heartbeats), so a replacement trying the shards in turn takes
over the dead worker's shard. Extra workers keep trying every few seconds.

Nothing is ever delivered, so no delivery is held unacked and RabbitMQ's consumer_timeout (which
closed the channel of every worker holding an unacked token, every 30 minutes by default) never
applies (docs/reliability.md, "Consumer timeout").

The shard queues are transient (common/topology.py): in a cluster, the loss of their node
deletes them and cancels their holders. The coordinator declares them in the same session as the
job's control queue, so on the same node; the loss of that node cancels its own hold on the job
and it starts a session again, declaring them anew; the workers lease again.

Refilling deletes the shard queues first, which revokes the leases still held: the broker
cancels their holders' consumers, and those workers lease again from the fresh queues. This way a
new job never has two holders of the same shard.
"""

from __future__ import annotations

import logging
import random
import threading

from common.amqp import Broker
from common.errors import BrokerUnavailable
from common.messages import ShardLease
from common.topology import Topology

log = logging.getLogger("fedmq.leases")
RETRY_SECONDS = 2.0


def remove(broker: Broker, topology: Topology) -> None:
    """Delete every shard queue of the job (revoking the leases held on them)."""
    index = 0
    while broker.exists(topology.shard(index)):
        broker.delete(topology.shard(index))
        index += 1


def refill(broker: Broker, topology: Topology, num_shards: int) -> None:
    """Coordinator side: revoke every lease of the job and offer shards 0 .. num_shards-1."""
    remove(broker, topology)
    for index in range(num_shards):
        broker.declare_queue(topology.lock_queue(topology.shard(index)))
    log.info("declared %d shard leases (%s ...)", num_shards, topology.shard(0))


def restore(broker: Broker, topology: Topology, num_shards: int) -> None:
    """Coordinator side, on a reconnect: declare again the shard queues a lost cluster node took
    with it (declaring one that exists changes nothing; its holder keeps it)."""
    for index in range(num_shards):
        broker.declare_queue(topology.lock_queue(topology.shard(index)))


class Lease:
    """Worker side: hold one shard queue's exclusive consumer for the life of the connection."""

    def __init__(self, broker: Broker, topology: Topology, num_shards: int) -> None:
        self.broker = broker
        self.topology = topology
        self.num_shards = num_shards
        self.token: ShardLease | None = None
        self.revoked = threading.Event()

    def acquire(self, stop: threading.Event) -> ShardLease | None:
        """Try the shards (from a random one) until one is free, serving the connection
        meanwhile; None if `stop` comes first."""
        while not stop.is_set():
            first = random.randrange(self.num_shards)
            for step in range(self.num_shards):
                index = (first + step) % self.num_shards
                if self.broker.claim(self.topology.shard(index), on_lost=self.revoked.set):
                    self.token = ShardLease(shard_index=index, num_shards=self.num_shards,
                                            job=self.topology.job)
                    return self.token
            self.broker.process(RETRY_SECONDS)
        return None

    def check(self) -> None:
        """Raise BrokerUnavailable (so the session starts over and leases again) if revoked."""
        if self.revoked.is_set():
            raise BrokerUnavailable("shard lease revoked: a new job refilled the shard leases, or "
                                    "the cluster node that held them was lost")
