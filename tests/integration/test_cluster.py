"""A job on a three-node RabbitMQ cluster survives the loss of any one node, or its partition
(issue 11).

One cluster for the module (tests/integration/cluster.py, ports 5720-5722). The coordinator and
the workers get every node's URL, each worker starting from another node; workers lease their
shards (so the transient lease queues are lost with a node and declared again). The node-loss
tests tap the updates the broker confirmed and end with the ledger audit of the chaos suite
(tests/integration/audit.py): every confirmed update decided, none applied twice, the final model
a replay of the applied ones. The time from a node's kill to the next applied update is printed
(docs/reliability.md), and so are the times of a network partition: until the majority drops the
cut-off node, until updates are applied again, until it runs again after the heal. Run them
alone with `python -m pytest -m cluster -s`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.amqp import Broker
from common.errors import FedmqError
from common.messages import WeightUpdate
from common.topology import QueueLimits, Topology
from coordinator import checkpoint
from fedmq.management import Management
from tests.integration.audit import audit, queues_end_empty, tap_updates, tapped_updates
from tests.integration.cluster import Cluster
from tests.integration.private_node import PrivateNode
from tests.integration.support import Processes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

WORKERS = 3
SHAPE: dict[str, Any] = {"dataset": "digits", "seed": 11, "num_shards": WORKERS,
                         "partition": "iid"}
JOB: dict[str, Any] = {**SHAPE, "strategy": "fedasync", "concurrency": WORKERS,
                       "eval_every": 10, "drain_seconds": 60, "queue_replicas": 3,
                       "heartbeat": 5}
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    nodes = Cluster(name=f"fedmqcl{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    try:
        nodes.start()
        print(f"\nthree-node cluster up in {time.monotonic() - started:.1f}s")
        yield nodes
    finally:
        nodes.destroy()


@pytest.fixture()
def job(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Topology, Processes]]:
    topology = Topology(job=f"c{uuid.uuid4().hex[:10]}", limits=QueueLimits(replicas=3))
    procs = Processes(tmp_path, {"FEDMQ_JOB": topology.job})
    yield topology, procs
    procs.stop_all()
    with contextlib.suppress(FedmqError):
        broker = Broker(cluster.url_list(), name="fedmq-test-cleanup")
        for queue in [*topology.all_queue_names(), f"{topology.updates}.audit-tap"]:
            broker.delete(queue)
        broker.close()


def start_job(cluster: Cluster, procs: Processes, out: Path, max_updates: int) -> Any:
    """Workers starting from nodes 0, 1, 2 (shards leased), then the coordinator (node 0 first,
    so the queues it declares are led from node 0)."""
    for slot in range(WORKERS):
        procs.start("worker", name=f"w{slot}", amqp_url=cluster.url_list(slot),
                    train_delay_seconds=0.1, heartbeat=5, **SHAPE)
    return procs.start("coordinator", out=out, wait_for_workers=WORKERS,
                       max_updates=max_updates, amqp_url=cluster.url_list(0), **JOB)


def version(out: Path) -> int:
    path = checkpoint.path_in(out)
    with contextlib.suppress(Exception):  # being replaced right now: ask again
        return int(checkpoint.load(path)["core"]["version"]) if path.exists() else -1
    return -1


def tap(cluster: Cluster, topology: Topology) -> None:
    """Tap the job's updates (a quorum queue on every node) before any worker publishes; the
    inbox exchange it binds to is the coordinator's, declared here first as it will."""
    broker = Broker(cluster.url_list(), name="fedmq-test-tap")
    broker.declare(topology)
    tap_updates(broker, topology)
    broker.close()


def tapped(cluster: Cluster, topology: Topology, first: int) -> dict[str, WeightUpdate]:
    broker = Broker(cluster.url_list(first), name="fedmq-test-audit")
    try:
        return tapped_updates(broker, topology)
    finally:
        broker.close()


def finish_and_audit(cluster: Cluster, procs: Processes, coordinator: Any, out: Path,
                     topology: Topology, first: int, max_updates: int) -> dict[str, Any]:
    """The job ends; every confirmed update was applied (or rejected) exactly once."""
    assert procs.wait(coordinator, RUN_TIMEOUT) == 0, procs.logs()
    procs.stop_all()
    result = audit(out, tapped(cluster, topology, first),
                   {**JOB, "max_updates": max_updates, "job": topology.job})
    assert result.summary["updates_applied"] == len(result.applied) == max_updates
    queues_end_empty(Management(cluster.nodes[first].management_url), topology)
    return result.summary


def assert_spread_and_replicated(cluster: Cluster, topology: Topology) -> None:
    """The workers are connected to the three nodes; every queue that holds messages has a copy
    on each node; the locks are transient classic queues."""
    def spread() -> dict[str, str]:
        found = cluster.connection_nodes("fedmq-worker")
        return found if len(set(found.values())) == 3 else {}

    nodes = wait_for(spread, RUN_TIMEOUT, "a worker connection on each node", every=1.0)
    assert sorted(set(nodes.values())) == cluster.running(), nodes
    for name in (topology.tasks, topology.updates, topology.model_requests, topology.dead):
        record = cluster.queue(name)
        assert record["type"] == "quorum" and len(record["members"]) == 3, record
    for name in (topology.control, topology.shard(0)):
        record = cluster.queue(name)
        assert record["type"] == "classic" and not record["durable"], record


def spread_job_at_version_15(cluster: Cluster, topology: Topology, procs: Processes, out: Path,
                             max_updates: int) -> Any:
    """Tap the job's updates, start it with a worker on each node (its spread and its queues'
    copies checked), and wait for its 15th applied update; returns the coordinator."""
    tap(cluster, topology)
    coordinator = start_job(cluster, procs, out, max_updates=max_updates)
    assert_spread_and_replicated(cluster, topology)
    wait_for(lambda: version(out) >= 15, RUN_TIMEOUT, "15 applied updates", every=0.2)
    return coordinator


def test_a_job_spread_over_three_nodes_loses_nothing_when_the_updates_leader_is_killed(
        cluster: Cluster, job: tuple[Topology, Processes], tmp_path: Path) -> None:
    topology, procs = job
    out = tmp_path / "out"
    # Given a 60-update job on the cluster, its confirmed updates tapped, its three workers
    # connected to the three nodes and its queues replicated on all three, at version 15
    coordinator = spread_job_at_version_15(cluster, topology, procs, out, max_updates=60)
    # When the node leading the updates queue is killed -9 mid-job
    leader = cluster.leader_of(topology.updates)
    at_kill = version(out)
    killed = time.monotonic()
    try:
        leader.kill_9()
        # Then an update is applied again soon (the roles reconnect to the two survivors)
        wait_for(lambda: version(out) > at_kill, 120, "an update applied after the kill",
                 every=0.05)
        recovery = time.monotonic() - killed
        print(f"\nkill -9 of {leader.node} (updates leader) at version {at_kill}: next "
              f"applied update after {recovery:.2f}s")
        survivor = next(i for i, node in enumerate(cluster.nodes) if node is not leader)

        def reconnected() -> dict[str, str]:
            found = cluster.connection_nodes("fedmq-")
            roles = [n for n in found if n.startswith(("fedmq-worker", "fedmq-coordinator"))]
            return found if len(roles) == WORKERS + 1 else {}

        roles = wait_for(reconnected, 60, "every role connected again", every=0.5)
        assert leader.node not in roles.values(), roles
        # and the job ends with every confirmed update applied exactly once
        finish_and_audit(cluster, procs, coordinator, out, topology, survivor, max_updates=60)
    finally:
        cluster.restart(leader)


def test_a_minority_node_stopped_and_started_again_mid_job_loses_nothing(
        cluster: Cluster, job: tuple[Topology, Processes], tmp_path: Path) -> None:
    topology, procs = job
    out = tmp_path / "out"
    # Given a 50-update job on the cluster, its confirmed updates tapped
    tap(cluster, topology)
    coordinator = start_job(cluster, procs, out, max_updates=50)
    wait_for(lambda: version(out) >= 10, RUN_TIMEOUT, "10 applied updates", every=0.2)
    # When node 2 (where worker 2 is connected) is stopped, cleanly, as for maintenance
    stopped = cluster.nodes[2]
    at_stop = version(out)
    stopped.stop()
    try:
        # Then the job goes on on the other two, and a new client gets the first that answers
        wait_for(lambda: version(out) >= at_stop + 10, 120, "10 updates with node 2 down",
                 every=0.2)
        probe = Broker(cluster.url_list(2), name="fedmq-test-probe")
        assert probe.queue_depth(topology.updates) is not None
        probe.close()
    finally:
        # When it starts again, it rejoins while the job runs
        cluster.restart(stopped)
    # Then the job ends with every confirmed update applied exactly once, on three nodes
    finish_and_audit(cluster, procs, coordinator, out, topology, 0, max_updates=50)
    assert len(cluster.queue(topology.updates)["members"]) == 3


def node_log(node: PrivateNode) -> str:
    return "".join(path.read_text(errors="replace")
                   for path in (node.directory / "log").glob("*.log"))


def test_a_node_cut_off_by_a_network_partition_mid_job_loses_nothing(
        cluster: Cluster, job: tuple[Topology, Processes], tmp_path: Path) -> None:
    topology, procs = job
    out = tmp_path / "out"
    # Given a 100-update job on the cluster, its confirmed updates tapped, its workers on the
    # three nodes, at version 15
    coordinator = spread_job_at_version_15(cluster, topology, procs, out, max_updates=100)
    # When the node leading the updates queue is cut off from its peers and its clients by a
    # network partition (tests/integration/partition.py), its processes left running
    cut = cluster.leader_of(topology.updates)
    majority = [node for node in cluster.nodes if node is not cut]
    at_cut = version(out)
    started = time.monotonic()
    cluster.partition(cut)
    try:
        # Then the two others drop it and carry on: updates are applied during the partition
        majority_names = sorted(node.node for node in majority)
        wait_for(lambda: cluster.running(via=majority) == majority_names, 120,
                 "the majority dropping the cut-off node", every=0.5)
        dropped = time.monotonic() - started
        wait_for(lambda: version(out) >= at_cut + 5, 120, "5 updates during the partition",
                 every=0.05)
        recovery = time.monotonic() - started
        # and the cut-off node, finding itself in the minority, stops serving (pause_minority)
        wait_for(lambda: "awaiting recovery" in node_log(cut), 120,
                 "the cut-off node pausing itself", every=0.5)
        paused = time.monotonic() - started
        assert coordinator.alive(), "the job ended before the partition healed"
        print(f"\npartition of {cut.node} (updates leader) at version {at_cut}: dropped by "
              f"its peers after {dropped:.1f}s, 5 updates applied after {recovery:.1f}s, "
              f"the node paused itself after {paused:.1f}s")
    finally:
        # When the partition heals
        cluster.heal()
    healed = time.monotonic()
    # Then it rejoins by itself, and no node reports a partition
    cluster.wait_running(cluster.size, timeout=120)
    print(f"running again {time.monotonic() - healed:.1f}s after the heal, at version "
          f"{version(out)} (job {'still running' if coordinator.alive() else 'ended'})")
    assert not cluster.partitions(), cluster.partitions()
    # and the job ends with every confirmed update applied exactly once, on three nodes
    survivor = cluster.nodes.index(majority[0])
    finish_and_audit(cluster, procs, coordinator, out, topology, survivor, max_updates=100)
    assert len(cluster.queue(topology.updates)["members"]) == 3
    assert not cluster.partitions(), cluster.partitions()
