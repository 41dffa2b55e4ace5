"""Removing a job from the broker: its shard leases, queues and exchanges, each as far as it
exists (tests and benchmarks share one broker, and every name of a job is its own)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from common import leases
from common.amqp import Broker
from common.errors import FedmqError
from common.topology import Topology


def remove_job(amqp_url: str, topology: Topology, name: str = "fedmq-cleanup") -> list[str]:
    """Delete everything `topology` names on the broker; a delete that fails (the broker closes
    the channel then) is skipped on a fresh connection. What could not be deleted, by name."""
    steps: list[tuple[str, Callable[[Broker], None]]] = [
        ("shard leases", lambda b: leases.remove(b, topology))]
    steps += [(queue, partial(Broker.delete, name=queue)) for queue in topology.all_queue_names()]
    steps += [(exchange.name, partial(Broker.delete, name=exchange.name, kind="exchange"))
              for exchange in topology.exchanges()]
    failed: list[str] = []
    broker = Broker(amqp_url, name=name)
    try:
        for what, step in steps:
            try:
                step(broker)
            except FedmqError:
                failed.append(what)
                broker.close()
                broker = Broker(amqp_url, name=name)
    finally:
        broker.close()
    return failed
