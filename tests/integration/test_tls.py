"""Transport security: a private RabbitMQ node that speaks only TLS with client certificates
(amqps on 5691), and fedmq processes that connect with the right certificates and are refused
without. The shared broker on 5672 is never touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.amqp import BrokerRefused
from common.connection import connect
from common.connection_settings import ConnectionSettings
from common.errors import BrokerUnavailable
from fedmq.management import Management
from fedmq.tls_certs import CertificateAuthority, Pair
from tests.integration.broker_tools import is_open
from tests.integration.private_node import PrivateNode
from tests.integration.support import Processes, wait_for

pytestmark = pytest.mark.integration
TLS_PORT = 5691


class TlsNode:
    def __init__(self, node: PrivateNode, ca: CertificateAuthority, client: Pair,
                 stranger: Pair) -> None:
        self.node, self.ca, self.client, self.stranger = node, ca, client, stranger
        self.url = f"amqps://guest:guest@127.0.0.1:{TLS_PORT}/%2F"
        self.management = Management(node.management_url)

    def settings(self, with_client_cert: bool = True, pair: Pair | None = None,
                 ) -> ConnectionSettings:
        pair = pair or self.client
        files = {"tls_cert_file": pair.cert, "tls_key_file": pair.key} if with_client_cert \
            else {}
        return ConnectionSettings(amqp_url=self.url, tls_ca_file=self.ca.cert_file, **files)

    def connection_names(self) -> list[str]:
        return [str(c.get("client_properties", {}).get("connection_name"))
                for c in self.management.connections() if c.get("ssl")]


@pytest.fixture(scope="module")
def tls_node() -> Iterator[TlsNode]:
    node = PrivateNode(name=f"fedmqtls{uuid.uuid4().hex[:6]}", amqp_port=5690,
                       management_port=15690)
    tls = node.directory / "tls"
    ca = CertificateAuthority(tls)
    server = ca.issue("broker", server=True)
    client = ca.issue("worker", server=False)
    stranger = CertificateAuthority(tls / "other", name="someone else").issue("stranger",
                                                                              server=False)
    node.extra_config = "\n".join([
        f"listeners.ssl.default = 127.0.0.1:{TLS_PORT}",
        f"ssl_options.cacertfile = {ca.cert_file}",
        f"ssl_options.certfile = {server.cert}",
        f"ssl_options.keyfile = {server.key}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    ])
    node.start()  # hands the folder, keys included, to the rabbitmq user
    try:
        yield TlsNode(node, ca, client, stranger)
    finally:
        node.destroy()


def test_a_client_with_the_right_certificate_connects_over_tls(tls_node: TlsNode) -> None:
    # When a connection is opened with the CA and a client certificate the CA issued
    broker = connect(tls_node.settings(), "fedmq-tls-probe")
    try:
        # Then it works, and the broker lists it as a TLS connection
        assert is_open(broker)
        wait_for(lambda: "fedmq-tls-probe" in tls_node.connection_names(), 20,
                 "the TLS connection in the management API")
    finally:
        broker.close()


@pytest.mark.parametrize("case", ["no client certificate", "certificate of another CA"])
def test_a_client_without_an_accepted_certificate_is_refused(tls_node: TlsNode,
                                                             case: str) -> None:
    settings = (tls_node.settings(with_client_cert=False) if case == "no client certificate"
                else tls_node.settings(pair=tls_node.stranger))
    # When it tries to connect, then the handshake fails and no connection is opened
    with pytest.raises((BrokerUnavailable, BrokerRefused)):
        connect(settings, "fedmq-tls-refused").close()
    assert "fedmq-tls-refused" not in tls_node.connection_names()


def test_worker_processes_connect_with_certificates_and_are_refused_without(
        tls_node: TlsNode, tmp_path: Path) -> None:
    # Given two real workers for a job on the TLS node, one with a client certificate
    job = f"t{uuid.uuid4().hex[:10]}"
    procs = Processes(tmp_path, {"FEDMQ_AMQP_URL": tls_node.url, "FEDMQ_JOB": job,
                                 "FEDMQ_TLS_CA_FILE": str(tls_node.ca.cert_file)})
    try:
        good = procs.start("worker", name="with-cert", worker_id="with-cert",
                           tls_cert_file=tls_node.client.cert, tls_key_file=tls_node.client.key)
        bad = procs.start("worker", name="without-cert", worker_id="without-cert")

        # Then the one with a certificate is connected over TLS (it waits for a coordinator)
        wait_for(lambda: "fedmq-worker-with-cert" in tls_node.connection_names(), 90,
                 "the worker with a certificate to connect")
        # And the one without keeps being refused, saying why, and never connects
        wait_for(lambda: bad.log().count("broker unavailable") >= 2, 90,
                 "the worker without a certificate to be refused twice")
        assert "fedmq-worker-without-cert" not in tls_node.connection_names()
        assert good.alive() and bad.alive()
    finally:
        procs.stop_all()
