"""Identical worker replicas obtain distinct shards through leases held in the broker, and a
replacement for a killed worker obtains the dead worker's shard."""

from __future__ import annotations

import re
import signal

import pytest

from common import leases
from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.support import Proc, Processes, wait_for

pytestmark = pytest.mark.integration
SHARDS = 4
LEASED = re.compile(r"leased shard (\d+)/(\d+)")


def leased_shard(proc: Proc) -> int | None:
    """The shard a worker leased most recently."""
    leased = LEASED.findall(proc.log())
    return int(leased[-1][0]) if leased else None


def lease_count(proc: Proc) -> int:
    return len(LEASED.findall(proc.log()))


def start_identical_worker(procs: Processes) -> Proc:
    """Every replica gets exactly the same settings: no shard index, no worker id."""
    return procs.start("worker", num_shards=SHARDS)


def shards_held(management: Management, topology: Topology) -> list[int]:
    """Consumers of each shard queue (the lease is the queue's one exclusive consumer)."""
    return [(management.queue(topology.shard(i)) or {}).get("consumers", 0)
            for i in range(SHARDS)]


def test_identical_workers_lease_distinct_shards_and_a_replacement_takes_over(
        procs: Processes, broker: Broker, topology: Topology, management: Management) -> None:
    # Given a job that offers one lease queue per shard (the coordinator's step)
    leases.refill(broker, topology, SHARDS)

    # When four identical workers start
    workers = [start_identical_worker(procs) for _ in range(SHARDS)]

    # Then each leases a different shard: each shard queue has one (exclusive) consumer, and
    # no message is held unacked anywhere
    wait_for(lambda: all(leased_shard(w) is not None for w in workers), 120,
             "four workers to lease a shard")
    shards = {w.name: leased_shard(w) for w in workers}
    assert sorted(shards.values()) == list(range(SHARDS)), shards
    wait_for(lambda: shards_held(management, topology) == [1] * SHARDS, 30,
             "the management API to show one consumer on each shard queue")

    # When one worker is killed without a chance to clean up, and a replacement starts
    victim = workers[1]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    replacement = start_identical_worker(procs)

    # Then the replacement obtains exactly the dead worker's shard
    wait_for(lambda: leased_shard(replacement) is not None, 120, "the replacement's lease")
    assert leased_shard(replacement) == shards[victim.name]
    assert all(w.alive() for w in workers if w is not victim)

    # When a new job refills the leases
    live = [w for w in workers if w is not victim] + [replacement]
    leases.refill(broker, topology, SHARDS)

    # Then every live worker gives up its old lease and leases again, still all distinct
    wait_for(lambda: all(lease_count(w) == 2 for w in live), 60, "every worker to lease again")
    assert sorted(leased_shard(w) for w in live) == list(range(SHARDS))
