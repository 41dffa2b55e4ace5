"""A role given several broker URLs (a cluster's nodes, issue 11): the list is read from the flag
or FEDMQ_AMQP_URL, checked at start, tried from the first, and from the next one after a loss;
TLS applies to every node under its own host name; the job's queues are replicated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from common import connection
from common.amqp import Broker
from common.broker_urls import rotated, split_urls, vhost_of
from common.errors import ConfigError
from common.settings import CoordinatorSettings, WorkerSettings
from common.topology import QueueLimits, Topology
from fedmq.local_broker import broker_for

NODES = ["amqp://u:p@rabbit-0:5672/fedmq", "amqp://u:p@rabbit-1:5672/fedmq",
         "amqp://u:p@rabbit-2:5672/fedmq"]


def test_a_comma_separated_list_in_the_environment_is_every_node_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given FEDMQ_AMQP_URL listing three nodes, with spaces after the commas
    monkeypatch.setenv("FEDMQ_AMQP_URL", ", ".join(NODES))
    # When a worker reads its settings, then it has the three URLs in order
    assert WorkerSettings().amqp_urls == NODES
    # and one URL is a list of one
    assert WorkerSettings(amqp_url=NODES[1]).amqp_urls == [NODES[1]]


@pytest.mark.parametrize(("value", "reason"), [
    ("", "no AMQP URL"),
    (" , ", "no AMQP URL"),
    (f"{NODES[0]},http://rabbit-1:15672", "not an amqp:// or amqps:// URL"),
    (f"{NODES[0]},amqps://u:p@rabbit-1:5671/fedmq", "mix amqp:// and amqps://"),
    (f"{NODES[0]},amqp://u:p@rabbit-1:5672/other", "different virtual hosts"),
])
def test_a_list_that_cannot_be_one_cluster_stops_at_start(value: str, reason: str) -> None:
    # Given a list that is empty, not AMQP, mixes TLS and plain, or names two vhosts
    # When a role reads it, then it is refused with the reason
    with pytest.raises(ValidationError, match=reason):
        WorkerSettings(amqp_url=value)


def test_tls_files_need_every_node_on_amqps(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tls_nodes = [url.replace("amqp://", "amqps://").replace("5672", "5671") for url in NODES]
    # Given TLS files, then a list of amqps:// nodes is accepted
    assert WorkerSettings(amqp_url=",".join(tls_nodes), tls_ca_file=ca).amqp_urls == tls_nodes
    # and a list of amqp:// ones is refused
    with pytest.raises(ValidationError, match="not amqps://"):
        WorkerSettings(amqp_url=",".join(NODES), tls_ca_file=ca)


def test_each_node_is_checked_under_its_own_host_name() -> None:
    # Given a verifying TLS context
    context = connection.tls_context("amqps://x", None)
    assert context is not None
    # When the connection parameters of two nodes are made, then each checks its own host
    for host in ("rabbit-0", "rabbit-1"):
        params = Broker._parameters(f"amqps://u:p@{host}:5671/fedmq", 30, "t", context)
        assert params.ssl_options is not None
        assert params.ssl_options.server_hostname == host
        assert params.ssl_options.context is context


def test_each_session_starts_from_the_next_node(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a connector over three nodes, and a Broker that records the order it is given
    orders: list[list[str]] = []
    monkeypatch.setattr(connection, "Broker", lambda urls, **_: orders.append(urls))
    connector = connection.Connector(WorkerSettings(amqp_url=",".join(NODES)), "fedmq-test")
    # When it connects four times (a first session, then three lost connections)
    for _ in range(4):
        connector.connect()
    # Then the first starts at the first node, each next one at the node after, all listed
    assert [order[0] for order in orders] == [NODES[0], NODES[1], NODES[2], NODES[0]]
    assert all(sorted(order) == sorted(NODES) for order in orders)
    assert rotated(NODES, 4) == [NODES[1], NODES[2], NODES[0]]


def test_a_broker_given_a_bad_list_says_so() -> None:
    with pytest.raises(ConfigError, match="different virtual hosts"):
        Broker(f"{NODES[0]},amqp://u:p@rabbit-1:5672/other")


def test_status_reads_the_vhost_of_the_list() -> None:
    assert vhost_of(split_urls(",".join(NODES))[0]) == "fedmq"


def test_fedmq_run_starts_no_private_broker_for_a_cluster() -> None:
    # Given two local URLs where nothing answers (ports of this test's range, unused)
    urls = ["amqp://guest:guest@127.0.0.1:5738/%2F", "amqp://guest:guest@127.0.0.1:5739/%2F"]
    # When `fedmq run` needs a broker, then it stops with one line naming both
    with pytest.raises(ConfigError, match="no node of the cluster answers") as refused, \
            broker_for(urls):
        pass
    assert "127.0.0.1:5738, 127.0.0.1:5739" in str(refused.value)


def test_every_queue_that_holds_messages_is_replicated_and_the_locks_are_transient() -> None:
    # Given a job whose queues are replicated on three nodes
    topology = Topology("j", QueueLimits(replicas=3))
    locks = {topology.control}
    # Then every queue but the locks is a quorum queue of three; the locks are transient
    for queue in topology.queues():
        if queue.name in locks:
            assert not queue.durable and "x-queue-type" not in queue.arguments
        else:
            assert queue.arguments["x-queue-type"] == "quorum", queue
            assert queue.arguments["x-quorum-initial-group-size"] == 3, queue
    assert not topology.lock_queue(topology.shard(0)).durable
    # and without a replication factor the broker's default applies (nothing is declared)
    assert all("x-quorum-initial-group-size" not in q.arguments for q in Topology("j").queues())
    settings = CoordinatorSettings(queue_replicas=3)
    assert settings.queue_limits().replicas == 3
