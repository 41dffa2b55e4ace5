"""The dead-letter queue is bounded (length, bytes, age), large rejected bodies are truncated with
their reason kept, and every job queue expires once the job is gone (issue 14, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.support import Processes, drain, read_summary, wait_for

pytestmark = pytest.mark.integration
SHAPE = {"dataset": "digits", "seed": 2, "num_shards": 2, "partition": "iid"}
BOUND, BODY_LIMIT, BAD = 40, 2048, 300


def test_a_flood_of_rejected_bodies_keeps_the_dead_letter_queue_bounded(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given a job whose dead-letter queue is bounded to 40 messages and whose dead letters keep
    # at most 2 KiB of a rejected body (its coordinator waits for its two workers)
    out = tmp_path / "out"
    coordinator = procs.start("coordinator", out=out, max_updates=40, concurrency=2,
                              wait_for_workers=2, dead_letter_max_messages=BOUND,
                              dead_letter_body_bytes=BODY_LIMIT, **SHAPE)
    wait_for(lambda: (management.queue(topology.dead) or {}).get("arguments", {})
             .get("x-max-length"), 120, "the bounded dead-letter queue")
    # (a fresh job purges its updates queue before it consumes it: publish after that)
    wait_for(lambda: (management.queue(topology.updates) or {}).get("consumers", 0) == 1, 120,
             "the coordinator consuming its updates")

    # When 300 bodies that must be rejected (half of them 100 KB) reach the updates queue, and
    # the workers start
    rng = np.random.default_rng(0)
    for index in range(BAD):
        broker.publish("", topology.updates, rng.bytes(100_000 if index % 2 else 100))
    for slot in range(2):
        procs.start("worker", name=f"w{slot}", shard_index=slot, train_delay_seconds=0.5,
                    **SHAPE)

    # Then the job goes on and ends normally, every bad body rejected
    assert procs.wait(coordinator, 400) == 0, coordinator.log()[-3000:]
    summary = read_summary(out)
    assert summary["updates_rejected"] == BAD and summary["updates_applied"] >= 40
    # and the dead-letter queue holds only the newest 40, each with its reason, large bodies cut
    # (on a fresh connection: the fixture's sat idle through the job, and a busy machine can make
    # that longer than two heartbeats, after which the broker drops it; seen on RabbitMQ 4.0)
    reader = Broker(amqp_url, name="fedmq-test-drain")
    try:
        dead = drain(reader, topology.dead)
    finally:
        reader.close()
    assert len(dead) == BOUND, len(dead)
    assert all(d.headers.get("x-fedmq-reason") for d in dead)
    assert all(len(d.body) <= BODY_LIMIT for d in dead)
    assert any(d.headers.get("x-fedmq-truncated-from") == 100_000 for d in dead)
    # and every queue of the job expires once nobody uses it
    for name in (topology.tasks, topology.updates, topology.dead, topology.model_requests):
        arguments = (management.queue(name) or {}).get("arguments", {})
        assert arguments.get("x-expires", 0) > 0, (name, arguments)
