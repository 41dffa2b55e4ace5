"""How a role connects to its broker: the AMQP URLs, heartbeat and TLS files of its settings,
and how a role that does not own the topology waits for it.

TLS (amqps:// URLs) verifies the broker's certificate against the given CA bundle (or the
system's) and its host name, and presents a client certificate when one is configured; with
several URLs (a cluster's nodes, common/broker_urls.py) each node is checked under its own name.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from common.amqp import Broker
from common.broker_urls import rotated
from common.connection_settings import ConnectionSettings
from common.errors import ConfigError

log = logging.getLogger(__name__)


def tls_context(url: str, ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext | None:
    """A verifying TLS context for an amqps:// URL (each connection checks the host name of
    its URL); None for amqp://. Files that cannot be loaded are a ConfigError."""
    if not url.startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from None
    return context


def connect(settings: ConnectionSettings, name: str, first: int = 0) -> Broker:
    """A Broker for the URLs, heartbeat and TLS files of `settings`: the first URL that
    answers, trying them from index `first` on (and round to the start)."""
    tls = tls_context(settings.amqp_url, settings.tls_ca_file, settings.tls_cert_file,
                      settings.tls_key_file)
    return Broker(rotated(settings.amqp_urls, first), heartbeat=settings.heartbeat, name=name,
                  tls=tls)


class Connector:
    """A service's connections, one per session: each new session starts from the URL after
    the one the previous session started from, so a role that lost its node tries the next
    node first (a node that is down refuses at once, one that does not answer costs
    socket_timeout), and the first session starts from the first URL."""

    def __init__(self, settings: ConnectionSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.sessions = 0

    def connect(self) -> Broker:
        first, self.sessions = self.sessions, self.sessions + 1
        return connect(self.settings, self.name, first)


def await_declared(broker: Broker, stop: threading.Event, queues: Sequence[str] = (),
                   exchanges: Sequence[str] = (), poll: float = 1.0) -> bool:
    """Wait (serving the connection) until every name exists; False if `stop` is set first.

    Services without configure permission (workers, watchers) never declare: they wait for
    the coordinator, which owns the topology.
    """
    wanted = [(name, "queue") for name in queues] + [(name, "exchange") for name in exchanges]
    logged = False
    while not stop.is_set():
        missing = [name for name, kind in wanted if not broker.exists(name, kind)]
        if not missing:
            return True
        if not logged:
            log.info("waiting for the coordinator to declare %s", ", ".join(missing))
            logged = True
        deadline = time.monotonic() + poll
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            broker.process(left)  # returns early once after a closed channel
    return False
