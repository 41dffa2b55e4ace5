"""A three-node RabbitMQ cluster on this machine, for the cluster tests (issue 11).

Three private nodes (tests/integration/private_node.py) with their own names, AMQP, management
and distribution ports, joined into one cluster the way an operator does it by hand: the first
node starts alone; each other node starts, then `stop_app`, `reset`, `join_cluster <first>`,
`start_app`. The nodes share one Erlang cookie because they all run with HOME=/var/lib/rabbitmq
(that directory's .erlang.cookie), which is what lets them talk. The shared broker on 5672 is
never touched, and the whole cluster is deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from tests.integration.private_node import CTL, PrivateNode

QUEUES_TOOL = "/usr/lib/rabbitmq/bin/rabbitmq-queues"


@dataclass
class Cluster:
    """Nodes `name`-0 .. `name`-(size-1) on AMQP ports first_port, first_port+1, ..."""

    name: str = "fedmqcluster"
    first_port: int = 5720
    size: int = 3
    extra_config: str = ""
    nodes: list[PrivateNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [PrivateNode(name=f"{self.name}-{i}", amqp_port=self.first_port + i,
                                  management_port=self.first_port + i + 10000,
                                  extra_config=self.extra_config)
                      for i in range(self.size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def url_list(self, first: int = 0) -> str:
        """FEDMQ_AMQP_URL: every node's URL, comma-separated, starting at node `first`."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.url for node in order)

    def start(self) -> None:
        """Start every node and join the others to the first; wait until all three run."""
        seed, others = self.nodes[0], self.nodes[1:]
        seed.start()
        for node in others:
            node.start()
            node.stop_app()
            node.run_tool([CTL, "-n", node.node, "reset"])
            node.run_tool([CTL, "-n", node.node, "join_cluster", seed.node])
            node.start_app()
        self.wait_running(len(self.nodes))

    def running(self, via: PrivateNode | None = None) -> list[str]:
        """Names of the cluster's running nodes, as the management API of `via` sees them."""
        for node in [via] if via else self.nodes:
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"http://127.0.0.1:{node.management_port}/api/nodes",
                                      auth=("guest", "guest"), timeout=5)
                answer.raise_for_status()
                return sorted(n["name"] for n in answer.json() if n.get("running"))
        return []

    def wait_running(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running()) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster has {self.running()} running, not {count} nodes")
            time.sleep(0.5)

    def queue(self, name: str, vhost: str = "/") -> dict[str, object]:
        """A queue's management record (type, leader, members...) from any node that answers."""
        for node in self.nodes:
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(
                    f"http://127.0.0.1:{node.management_port}/api/queues/"
                    f"{quote(vhost, safe='')}/{quote(name, safe='')}",
                    auth=("guest", "guest"), timeout=5)
                if answer.status_code == 200:
                    return dict(answer.json())
        raise AssertionError(f"no node knows queue {name}")

    def node_named(self, erlang_name: str) -> PrivateNode:
        return next(node for node in self.nodes if node.node == erlang_name)

    def leader_of(self, queue: str) -> PrivateNode:
        """The node that leads quorum queue `queue` (the management API's `leader`)."""
        return self.node_named(str(self.queue(queue)["leader"]))

    def kill_9(self, node: PrivateNode) -> None:
        """SIGKILL the node's Erlang VM (beam), as a crashed machine: no goodbye to its peers."""
        pid = int((node.directory / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.node} (pid {pid}) survived SIGKILL")
            time.sleep(0.1)

    def restart(self, node: PrivateNode) -> None:
        """Start a stopped or killed node again with its data; it rejoins the cluster."""
        node.run_tool([node_server(), "-detached"])
        node_await(node)

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


def node_server() -> str:
    from tests.integration.private_node import SERVER
    return SERVER


def node_await(node: PrivateNode) -> None:
    node._await_startup()
    if node.management:
        node.wait_for_management()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    return True


def quorum_members(cluster: Cluster, queue: str) -> Sequence[str]:
    return [str(m) for m in cluster.queue(queue).get("members", [])]


if __name__ == "__main__":  # a manual check: start, print, stop
    c = Cluster()
    t = time.monotonic()
    try:
        c.start()
        print("running", c.running(), f"in {time.monotonic() - t:.1f}s")
        subprocess.run(["sleep", "1"], check=True)
    finally:
        c.destroy()
