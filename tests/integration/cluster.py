"""A three-node RabbitMQ cluster on this machine, for the cluster tests (issue 11).

Three private nodes (tests/integration/private_node.py) with their own names, AMQP, management
and distribution ports (AMQP + 10000, AMQP + 20000), joined into one cluster the way an operator
does it by hand: the nodes start (at once, side by side), then every node but the first runs
`stop_app`, `reset`, `join_cluster <first>`, `start_app`. They share one Erlang cookie because
they all run with HOME=/var/lib/rabbitmq (that directory's .erlang.cookie): without it they could
not talk. Each node starts in a cgroup of its own, so that a test can cut one off with a network
partition (tests/integration/partition.py); they run with `cluster_partition_handling =
pause_minority`, as deploy/rabbitmq/cluster.conf, and a 10 s net tick time (60 s by default) so
that peers drop a cut-off node sooner. The shared broker on 5672 is never touched, and the
cluster is deleted at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from tests.integration import partition
from tests.integration.private_node import CTL, SERVER, PrivateNode

AUTH = ("guest", "guest")
TICK_SECONDS = 10  # net_ticktime of the nodes and of their CLI tools (Erlang wants them equal)
PARTITION_HANDLING = f"cluster_partition_handling = pause_minority\nnet_ticktime = {TICK_SECONDS}"


@dataclass
class Cluster:
    """Nodes `name`-0 .. `name`-(size-1) on AMQP ports first_port, first_port+1, ..."""

    name: str = "fedmqcluster"
    first_port: int = 5720
    size: int = 3
    nodes: list[PrivateNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [PrivateNode(name=f"{self.name}-{i}", amqp_port=self.first_port + i,
                                  management_port=self.first_port + i + 10000,
                                  extra_config=PARTITION_HANDLING,
                                  ctl_erl_args=f"-kernel net_ticktime {TICK_SECONDS}")
                      for i in range(self.size)]

    def url_list(self, first: int = 0) -> str:
        """FEDMQ_AMQP_URL: every node's URL, comma-separated, starting at node `first`."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.url for node in order)

    def start(self) -> None:
        """Start the nodes side by side, join the others to the first; wait until all run."""
        # the port mapper the nodes share must not start inside one node's cgroup (cut off
        # with it): the shared broker's is usually running already, this makes sure
        subprocess.run(["epmd", "-daemon"], check=True)
        partition.heal()  # a chain left by a killed run would cut these ports off
        for node in self.nodes:  # (made here, so that `destroy` removes what was made)
            node.cgroup = partition.make_cgroup(f"fedmq-{node.name}")
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(PrivateNode.start, self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.stop_app()
            node.run_tool([CTL, "-n", node.node, "reset"])
            node.run_tool([CTL, "-n", node.node, "join_cluster", seed.node])
            node.start_app()
        self.wait_running(self.size)

    def _get(self, path: str, via: list[PrivateNode] | None = None) -> Any:
        """GET the management API of the first node (of `via`) that answers."""
        for node in via or self.nodes:
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"http://127.0.0.1:{node.management_port}/api/{path}",
                                      auth=AUTH, timeout=5)
                if answer.status_code == 200:
                    return answer.json()
        return None

    def running(self, via: list[PrivateNode] | None = None) -> list[str]:
        """Erlang names of the cluster's running nodes (as the first of `via` that answers
        sees them)."""
        return sorted(n["name"] for n in self._get("nodes", via) or [] if n.get("running"))

    def wait_running(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running()) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster has {self.running()} running, not {count} nodes")
            time.sleep(0.5)

    def queue(self, name: str) -> dict[str, Any]:
        """A queue's management record (type, leader, members, durable...)."""
        record = self._get(f"queues/%2F/{quote(name, safe='')}")
        assert record is not None, f"no node knows queue {name}"
        return dict(record)

    def connection_nodes(self, prefix: str) -> dict[str, str]:
        """{connection name: the node it is on} of the connections named `prefix`..."""
        found = {}
        for connection in self._get("connections") or []:
            name = (connection.get("client_properties") or {}).get("connection_name", "")
            if name.startswith(prefix):
                found[name] = connection["node"]
        return found

    def node_named(self, erlang_name: str) -> PrivateNode:
        return next(node for node in self.nodes if node.node == erlang_name)

    def leader_of(self, queue: str) -> PrivateNode:
        """The node that leads quorum queue `queue`."""
        return self.node_named(str(self.queue(queue)["leader"]))

    def restart(self, node: PrivateNode) -> None:
        """Start a stopped or killed node again on its data: it rejoins the cluster."""
        node.run_tool([SERVER, "-detached"])
        node._await_startup()
        node.wait_for_management()
        self.wait_running(self.size)

    def partition(self, node: PrivateNode) -> None:
        """Cut `node` off from its peers and its clients (tests/integration/partition.py)."""
        assert node.cgroup is not None
        partition.cut_off(node.cgroup, [node.amqp_port, node.management_port,
                                        node.amqp_port + 20000])

    def heal(self) -> None:
        partition.heal()

    def partitions(self) -> dict[str, list[str]]:
        """{node: the peers it reports a partition with}, of the nodes that report one."""
        nodes = self._get("nodes")
        assert nodes is not None, "no node's management API answered"
        return {n["name"]: n["partitions"] for n in nodes if n.get("partitions")}

    def destroy(self) -> None:
        try:
            partition.heal()
        finally:
            for node in self.nodes:
                node.destroy()
                if node.cgroup is not None:
                    partition.kill_all(node.cgroup)  # what outlived its VM (its port helpers)
                    partition.remove_cgroup(node.cgroup)

