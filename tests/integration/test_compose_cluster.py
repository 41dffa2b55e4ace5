"""`docker compose -f docker-compose.cluster.yml up --scale worker=4` on a real Docker engine
(issue 11): the project's cluster file and Dockerfile, unchanged, with a test override that keeps
every packet on loopback (compose_cluster.py), on RabbitMQ 4.0 (Debian trixie).

The three broker containers form one cluster by the file's classic-config peer discovery; the
observer sees the three nodes running, four consumers on the tasks queue and the job's quorum
queues with a member on every node; then the container of the node that leads the updates queue
is killed with `docker kill` mid-job and stays dead. The job (150 updates) ends on the two
survivors with final_accuracy >= 0.90 and every update a worker got confirmed decided exactly
once (the chaos suite's ledger audit); the time from the kill to the next applied update is
printed. Everything is torn down, volumes too, even when a step fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.amqp import Broker, BrokerRefused
from common.errors import BrokerUnavailable
from common.topology import QueueLimits, Topology
from fedmq.management import Management
from tests.deploy_support import ROOT
from tests.integration.audit import audit, tap_updates, tapped_updates
from tests.integration.compose_cluster import (
    METRICS_PORT,
    NODES,
    ClusterStack,
    amqp_url,
    management_url,
    node_name,
)
from tests.integration.compose_engine import (
    TRIXIE,
    docker,
    ensure_images,
    metrics_version,
    password,
    wait_exit,
)
from tests.integration.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
TOPOLOGY = Topology(limits=QueueLimits(replicas=3))  # as the file's coordinator declares it
WORKERS = 4
MAX_UPDATES = 150
JOB = {"worker": {"FEDMQ_TRAIN_DELAY_SECONDS": "0.3"},
       "coordinator": {"FEDMQ_MAX_UPDATES": str(MAX_UPDATES),
                       "FEDMQ_METRICS_LINGER_SECONDS": "0"}}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ClusterStack]:
    try:
        ensure_images()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
    compose = ClusterStack(TRIXIE.image, tmp_path, JOB)
    compose.down()  # a stack left over by an interrupted run
    try:
        yield compose
    finally:
        print("\n".join(compose.log[-40:]))
        for service in ("rabbitmq-0", "rabbitmq-1", "rabbitmq-2", "coordinator"):
            print(compose.logs(service)[-3000:])
        compose.down()
        leftovers = docker("ps", "-aq", "--filter",
                           f"label=com.docker.compose.project={compose.project}").split()
        volumes = docker("volume", "ls", "-q", "--filter", f"name={compose.project}_").split()
        assert not leftovers and not volumes, (leftovers, volumes)


def admin(index: int) -> Broker:
    return Broker(amqp_url("fedmq-admin", password("admin"), index), name="fedmq-test-admin")


def api(index: int, path: str) -> object:
    response = requests.get(f"{management_url(index)}/api/{path}", timeout=10,
                            auth=("fedmq-observer", password("observer")))
    response.raise_for_status()
    return response.json()


def running_nodes(index: int) -> list[str]:
    try:
        nodes = api(index, "nodes")
    except requests.RequestException:
        return []
    assert isinstance(nodes, list)
    return sorted(node["name"] for node in nodes if node.get("running"))


def coordinator_node(index: int) -> str | None:
    """The node the coordinator's connection is on, as node `index`'s API sees it."""
    try:
        connections = api(index, "connections")
    except requests.RequestException:
        return None
    assert isinstance(connections, list)
    nodes = [c["node"] for c in connections
             if (c.get("client_properties") or {}).get("connection_name") == "fedmq-coordinator"]
    return nodes[0] if len(nodes) == 1 else None


def version() -> int:
    return metrics_version(METRICS_PORT)


def the_cluster_forms(stack: ClusterStack) -> None:
    """`up -d` of the three brokers (broker-users first); the observer sees three nodes."""
    stack.up(0, "rabbitmq-0", "rabbitmq-1", "rabbitmq-2")
    everyone = sorted(node_name(i) for i in range(NODES))
    wait_for(lambda: running_nodes(0) == everyone, 240, "three running nodes in one cluster",
             every=2.0)

    def connected() -> Broker | None:
        try:
            return admin(0)
        except (BrokerUnavailable, BrokerRefused):
            return None

    tap = wait_for(connected, 120, "the admin connected to rabbitmq-0", every=2.0)
    try:  # the tap (a quorum queue on all three) before any worker publishes
        tap.declare(TOPOLOGY)
        tap_updates(tap, TOPOLOGY)
    finally:
        tap.close()


def the_job_is_spread_and_replicated(watching: Management) -> None:
    wait_for(lambda: (watching.queue(TOPOLOGY.tasks) or {}).get("consumers") == WORKERS, 300,
             f"{WORKERS} consumers on {TOPOLOGY.tasks}", every=2.0)
    for name in (TOPOLOGY.tasks, TOPOLOGY.updates, TOPOLOGY.model_requests, TOPOLOGY.dead):
        record = watching.queue(name) or {}
        assert record.get("type") == "quorum" and len(record.get("members", [])) == NODES, record


def test_a_compose_cluster_job_survives_the_kill_of_its_updates_leader(
        stack: ClusterStack, tmp_path: Path) -> None:
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"cluster compose: {what} at {time.monotonic() - started:.0f} s")

    # Given the three brokers of the file, clustered
    the_cluster_forms(stack)
    step("three nodes in one cluster")
    # When the stack comes up with four workers
    stack.up(WORKERS)
    the_job_is_spread_and_replicated(
        Management(management_url(0).replace("://", f"://fedmq-observer:{password('observer')}@"),
                   vhost="fedmq"))
    step("four consumers, queues on three nodes")
    wait_for(lambda: version() >= 20, 300, "the job under way", every=1.0)
    # and the node leading the updates queue is killed and stays dead
    leader = str(api(0, "queues/fedmq/" + TOPOLOGY.updates)["leader"])  # type: ignore[index]
    victim = next(i for i in range(NODES) if node_name(i) == leader)
    (container,) = stack.containers(f"rabbitmq-{victim}")
    survivor = (victim + 1) % NODES
    on = wait_for(lambda: coordinator_node(survivor), 60, "the coordinator's connection")
    docker("kill", container)
    killed = time.monotonic()
    step(f"killed rabbitmq-{victim} ({leader}; the coordinator was on {on}) at version "
         f"{version()}")
    # Then the coordinator is connected to a survivor (its first URL is rabbitmq-0's, where it
    # declared the queues, so it usually led them and was on the victim: then it reconnects),
    # and applies updates again: the time from the kill to the first update applied after that
    wait_for(lambda: coordinator_node(survivor) not in (None, leader), 300,
             "the coordinator connected to a survivor", every=0.2)
    reconnected, at = time.monotonic(), version()
    wait_for(lambda: version() > at, 300, "an update applied after the reconnect", every=0.2)
    moved = "reconnected to" if on == leader else "still on"
    print(f"coordinator {moved} {coordinator_node(survivor)} {reconnected - killed:.1f} s after "
          f"the kill; the next update applied {time.monotonic() - killed:.1f} s after the kill")
    # Then the job ends on the two survivors, with every confirmed update decided once
    (coordinator,) = stack.containers("coordinator")
    assert wait_exit(coordinator, 900) == 0
    out = tmp_path / "results"
    compose = f"docker-compose -p {stack.project} --project-directory . -f {stack.project_file}"
    subprocess.run(["sh", "-c", f'docker cp "$({compose} ps -q coordinator)":'
                                f"/var/lib/fedmq/results {out}"],
                   check=True, cwd=ROOT, timeout=120, env=stack.env)
    summary = json.loads((out / "summary.json").read_text())
    print(f"cluster compose: final accuracy {summary['final_accuracy']:.4f}")
    assert summary["updates_applied"] == MAX_UPDATES, summary
    assert summary["final_accuracy"] >= 0.90, summary
    assert sorted(running_nodes(survivor)) == sorted(
        node_name(i) for i in range(NODES) if i != victim)
    tap = admin(survivor)
    try:
        env = stack.config["services"]["coordinator"]["environment"]
        audit(out, tapped_updates(tap, TOPOLOGY),
              {key.removeprefix("FEDMQ_").lower(): env[key]
               for key in ("FEDMQ_DATASET", "FEDMQ_SEED", "FEDMQ_NUM_SHARDS")})
    finally:
        tap.close()
    step("job ended and audited")
