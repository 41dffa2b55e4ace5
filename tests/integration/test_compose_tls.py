"""The compose file with TLS on (`-f docker-compose.yml -f docker-compose.tls.yml`), run as local
processes: a private RabbitMQ node configured with deploy/rabbitmq/tls.conf as it is (only its
port and the certificate paths mapped to this machine), the compose definitions (vhost, users)
loaded into it, certificates from `fedmq tls generate`, and the coordinator and worker services
started from their merged command and environment, with every mounted file mapped to its source.
A short job completes over TLS; plain AMQP is refused. The shared broker is never touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from common.amqp import BrokerRefused
from common.connection import connect
from common.connection_settings import ConnectionSettings
from common.errors import BrokerUnavailable
from fedmq.management import Management
from fedmq.tls_certs import generate_deployment
from tests.deploy_support import (
    COMPOSE_TLS_FILE,
    RABBITMQ_TLS_CONF,
    ROOT,
    compose_config,
    fedmq_services,
    mounts,
    rabbitmq_conf,
    rendered_definitions,
)
from tests.integration.private_node import PrivateNode
from tests.integration.support import Proc, Processes, read_summary, wait_for

pytestmark = pytest.mark.integration
PLAIN_PORT, TLS_PORT, MANAGEMENT_PORT = 5696, 5697, 15696  # test_tls.py uses 5690/5691/15690
TLS_DIR = ROOT / "deploy" / "tls"
MAX_UPDATES = 8


@dataclass
class TlsCompose:
    node: PrivateNode
    certificates: Path  # what `fedmq tls generate` wrote, standing in for deploy/tls
    config: dict[str, Any]

    def local_file(self, source: str) -> Path:
        """The file on this machine for a mount source under deploy/tls."""
        assert Path(source).parent == TLS_DIR, source
        return self.certificates / Path(source).name

    def local_url(self, url: str) -> str:
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("amqps", "rabbitmq", 5671), url
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{TLS_PORT}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def env(self, service: str) -> dict[str, str]:
        """The service's merged environment, its broker and mounted files mapped to this host."""
        spec = fedmq_services(self.config)[service]
        env = {key: str(value) for key, value in spec["environment"].items()}
        env["FEDMQ_AMQP_URL"] = self.local_url(env["FEDMQ_AMQP_URL"])
        service_mounts = mounts(spec)
        for key in ("FEDMQ_TLS_CA_FILE", "FEDMQ_TLS_CERT_FILE", "FEDMQ_TLS_KEY_FILE"):
            env[key] = str(self.local_file(service_mounts[env[key]]))
        return env


def broker_config(certificates: Path, broker_mounts: dict[str, str]) -> str:
    """deploy/rabbitmq/tls.conf with its port and its file paths (mount targets in the broker
    container) mapped to this machine; every other line exactly as in the file."""
    conf = rabbitmq_conf(RABBITMQ_TLS_CONF)
    lines = []
    for line in RABBITMQ_TLS_CONF.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "listeners.ssl.default":
            line = f"listeners.ssl.default = 127.0.0.1:{TLS_PORT}"
        elif key.startswith("ssl_options.") and key.endswith("file"):
            source = broker_mounts[conf[key]]
            assert Path(source).parent == TLS_DIR, source
            line = f"{key} = {certificates / Path(source).name}"
        lines.append(line)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def compose() -> Iterator[TlsCompose]:
    config = compose_config(COMPOSE_TLS_FILE)
    node = PrivateNode(name=f"fedmqctls{uuid.uuid4().hex[:6]}", amqp_port=PLAIN_PORT,
                       management_port=MANAGEMENT_PORT)
    certificates = node.directory / "tls"
    generate_deployment(certificates)  # the defaults of `fedmq tls generate`
    node.extra_config = broker_config(certificates, mounts(config["services"]["rabbitmq"]))
    node.start()
    try:
        # the compose broker's users, vhost and permissions (the private node's own guest stays)
        requests.post(f"http://127.0.0.1:{MANAGEMENT_PORT}/api/definitions",
                      json=rendered_definitions(), auth=("guest", "guest"),
                      timeout=30).raise_for_status()
        yield TlsCompose(node, certificates, config)
    finally:
        node.destroy()


def start(compose: TlsCompose, procs: Processes, service: str, name: str,
          **overrides: Any) -> Proc:
    """Like `docker compose up` starts a service: the image's `fedmq` entry point (here
    `python -m fedmq`) with the service's command and environment."""
    command = fedmq_services(compose.config)[service]["command"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")}
    env |= compose.env(service) | {k: str(v) for k, v in overrides.items()}
    log_path = procs.workdir / f"{name}.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "fedmq", *command], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    proc = Proc(service, name, process, log_path)
    procs.started.append(proc)
    return proc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_compose_services_complete_a_job_over_tls(compose: TlsCompose,
                                                      tmp_path: Path) -> None:
    # Given the coordinator and two workers of the TLS compose project
    procs = Processes(tmp_path, {})
    out = tmp_path / "results"
    try:
        start(compose, procs, "coordinator", "coordinator", FEDMQ_OUT=out,
              FEDMQ_METRICS_PORT=free_port(), FEDMQ_METRICS_LINGER_SECONDS=0,
              FEDMQ_MAX_UPDATES=MAX_UPDATES)
        for replica in range(2):
            start(compose, procs, "worker", f"worker-{replica}")

        # Then the job completes (the node has no plain listener: the coordinator and the
        # workers can only have talked to it over TLS, see the next test)
        wait_for(lambda: (out / "summary.json").exists(), 180, "the coordinator's summary")
        summary = read_summary(out)
        assert summary["updates_applied"] == MAX_UPDATES, procs.logs()
        assert summary["workers"] == 2

        # And the workers, still connected, are listed as TLS connections of the worker user
        # (the coordinator's connection, closed after a few seconds' job, is often gone before
        # the management statistics list it)
        management = Management(compose.node.management_url)
        connections = wait_for(
            lambda: (lambda found: found if {str(c.get("user")) for c in found}
                     == {"fedmq-worker"} else None)(management.connections()),
            60, "the workers' connections in the management API")
        assert all(c.get("ssl") for c in connections), connections
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()


def test_plain_amqp_is_off_and_a_client_without_certificate_is_refused(
        compose: TlsCompose) -> None:
    # listeners.tcp = none: nothing answers on the node's plain port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", PLAIN_PORT), 5):
        pass
    # the worker's URL and CA, without its client certificate: refused at the handshake
    env = compose.env("worker")
    settings = ConnectionSettings(amqp_url=env["FEDMQ_AMQP_URL"],
                                  tls_ca_file=Path(env["FEDMQ_TLS_CA_FILE"]))
    with pytest.raises((BrokerUnavailable, BrokerRefused)):
        connect(settings, "fedmq-no-client-cert").close()


def test_the_compose_healthcheck_passes_with_tls_on(compose: TlsCompose) -> None:
    # The broker's healthcheck (rabbitmq-diagnostics check_port_connectivity) must still pass,
    # or `depends_on: service_healthy` would never start the fedmq services
    test = compose.config["services"]["rabbitmq"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "rabbitmq-diagnostics"]
    compose.node.diagnostics(*test[2:])
