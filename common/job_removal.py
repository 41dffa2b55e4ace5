"""Removing a job from the broker: its shard leases, queues and exchanges, each as far as it
exists (tests and benchmarks share one broker, and every name of a job is its own)."""

from __future__ import annotations

import contextlib

from common import leases
from common.amqp import Broker
from common.errors import FedmqError
from common.topology import Topology


def remove_job(amqp_url: str, topology: Topology, name: str = "fedmq-cleanup") -> None:
    """Delete everything `topology` names on the broker; what is already gone is skipped."""
    broker = Broker(amqp_url, name=name)
    try:
        with contextlib.suppress(FedmqError):
            leases.remove(broker, topology)
        for queue in topology.all_queue_names():
            with contextlib.suppress(FedmqError):
                broker.delete_queue(queue)
        for exchange in topology.exchanges():
            with contextlib.suppress(FedmqError):
                broker.delete_exchange(exchange.name)
    finally:
        broker.close()
