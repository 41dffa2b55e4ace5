"""common.job_removal on the real broker: a secure job's leases, queues and exchanges are all
deleted (the benchmarks left exchanges behind before), and removing it again changes nothing."""

from __future__ import annotations

import uuid

import pytest

from common import leases
from common.amqp import Broker
from common.job_removal import remove_job
from common.topology import Topology
from fedmq.management import Management

pytestmark = pytest.mark.integration


def left(management: Management, job: str) -> list[str]:
    prefix = f"fedmq.{job}."
    return sorted([q["name"] for q in management.queues(prefix)] +
                  [e["name"] for e in management.exchanges(prefix)])


def test_a_removed_job_leaves_nothing_on_the_broker(amqp_url: str,
                                                    management: Management) -> None:
    # Given a secure job's whole topology and two shard leases, declared on the broker
    topology = Topology(job=f"t{uuid.uuid4().hex[:10]}", secure=True)
    broker = Broker(amqp_url, name="fedmq-test-removal")
    try:
        broker.declare(topology)
        leases.refill(broker, topology, 2)
    finally:
        broker.close()
    declared = left(management, topology.job)
    assert topology.helper_outbox in declared and topology.shard(1) in declared, declared
    assert len(declared) >= len(topology.exchanges()) + 2
    # When it is removed, Then nothing failed and none of its queues or exchanges is left
    assert remove_job(amqp_url, topology) == []
    assert left(management, topology.job) == []
    # and removing it again finds nothing to fail on
    assert remove_job(amqp_url, topology) == []
