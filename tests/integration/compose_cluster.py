"""docker-compose.cluster.yml on a real Docker engine: three broker containers clustered by the
file's own classic-config peer discovery, with the coordinator, workers and monitor, torn down
(volumes too) afterwards.

As for the single-broker file (compose_engine.py) the test override keeps every packet on
loopback: every service on the host's network, the names rabbitmq-0/1/2 mapped to 127.0.0.1, and
each node on ports of its own (AMQP 5751-5753, management 15751-15753, distribution AMQP + 20000)
under a node name of its own (`fedmq-cluster-N@localhost`: on the host's network a container has
the host's name, so the file's `rabbit@rabbitmq-N` names are replaced in a copy of the project's
deploy/rabbitmq/cluster.conf, its other lines unchanged). The nodes share the Erlang cookie of
FEDMQ_ERLANG_COOKIE, as in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.deploy_support import ROOT, compose_env
from tests.integration.compose_engine import (
    FEDMQ_IMAGE,
    FEDMQ_SERVICES,
    Stack,
    password,
    ports_conf,
    resolved,
)

CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"
CLUSTER_CONF = ROOT / "deploy" / "rabbitmq" / "cluster.conf"
PROJECT = "fedmq-engine-cluster"
NODES = 3
AMQP_PORTS = tuple(5751 + i for i in range(NODES))
MANAGEMENT_PORTS = tuple(15751 + i for i in range(NODES))
METRICS_PORT = 9751
COOKIE = "fedmq-engine-cluster-cookie-3b9e"
ROLE_USERS = {"coordinator": "fedmq-coordinator", "worker": "fedmq-worker",
              "monitor": "fedmq-observer"}


def node_name(index: int) -> str:
    return f"fedmq-cluster-{index}@localhost"


def amqp_url(user: str, secret: str, index: int, host: str = "127.0.0.1") -> str:
    return f"amqp://{user}:{secret}@{host}:{AMQP_PORTS[index]}/fedmq"


def url_list(user: str, secret: str) -> str:
    """The three nodes' URLs, as the roles of the file get them (by the names rabbitmq-N)."""
    return ",".join(amqp_url(user, secret, i, f"rabbitmq-{i}") for i in range(NODES))


def management_url(index: int) -> str:
    return f"http://127.0.0.1:{MANAGEMENT_PORTS[index]}"


def override(image: str, workdir: Path, settings: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The test override of docker-compose.cluster.yml (service -> settings adds variables)."""
    host = {"network_mode": "host",
            "extra_hosts": [f"rabbitmq-{i}:127.0.0.1" for i in range(NODES)]}
    cluster_conf = workdir / "30-cluster.conf"  # the project's, with the test's node names
    text = CLUSTER_CONF.read_text()
    for i in range(NODES):
        assert f"rabbit@rabbitmq-{i}" in text, f"{CLUSTER_CONF} no longer lists rabbitmq-{i}"
        text = text.replace(f"rabbit@rabbitmq-{i}", node_name(i))
    cluster_conf.write_text(text)
    services: dict[str, Any] = {"broker-users": {"image": image, "network_mode": "none"}}
    for i in range(NODES):
        ports = ports_conf(workdir / f"90-test-ports-{i}.conf", AMQP_PORTS[i],
                           MANAGEMENT_PORTS[i])
        services[f"rabbitmq-{i}"] = {
            **host, "image": image,
            "environment": {"RABBITMQ_NODENAME": node_name(i),
                            "RABBITMQ_DIST_PORT": str(AMQP_PORTS[i] + 20000)},
            "volumes": [f"{cluster_conf}:/etc/rabbitmq/conf.d/30-cluster.conf:ro",
                        f"{ports}:/etc/rabbitmq/conf.d/90-test-ports.conf:ro"]}
    for service in FEDMQ_SERVICES:
        user = ROLE_USERS[service]
        role = "observer" if service == "monitor" else service
        services[service] = {**host, "image": FEDMQ_IMAGE,
                             "environment": {"FEDMQ_AMQP_URL": url_list(user, password(role)),
                                             **settings.get(service, {})}}
    services["coordinator"]["environment"] |= {"FEDMQ_METRICS_PORT": str(METRICS_PORT),
                                               "FEDMQ_METRICS_ADDRESS": "127.0.0.1"}
    services["monitor"]["environment"]["FEDMQ_MANAGEMENT_URL"] = (
        f"http://fedmq-observer:{password('observer')}@rabbitmq-0:{MANAGEMENT_PORTS[0]}")
    return {"services": services}


class ClusterStack(Stack):
    """docker-compose.cluster.yml with the test override."""

    def __init__(self, image: str, workdir: Path,
                 settings: dict[str, dict[str, str]]) -> None:
        cookie = (("FEDMQ_ERLANG_COOKIE", COOKIE),)
        self.override = workdir / "docker-compose.cluster-test.yml"
        self.override.write_text(json.dumps(override(image, workdir, settings), indent=2))
        project_file = workdir / "docker-compose.cluster-resolved.yml"
        self.config = resolved(self.override, base=CLUSTER_FILE, extra_env=cookie)
        project_file.write_text(json.dumps(self.config, indent=2))
        super().__init__(PROJECT, project_file, {**compose_env(), **dict(cookie)})
