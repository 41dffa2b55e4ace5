"""How a role connects to its broker: the AMQP URL, heartbeat and TLS files of its settings.

TLS (amqps:// URLs) verifies the broker's certificate against the given CA bundle (or the
system's) and its host name, and presents a client certificate when one is configured.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from common.amqp import Broker
from common.errors import ConfigError
from common.settings import ConnectionSettings


def tls_context(url: str, ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> tuple[ssl.SSLContext, str | None] | None:
    """A verifying TLS context and the host name to check, for an amqps:// URL; None for
    amqp://. Files that cannot be loaded are a ConfigError."""
    if not url.startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from None
    return context, urlsplit(url).hostname


def connect(settings: ConnectionSettings, name: str) -> Broker:
    """A Broker for the URL, heartbeat and TLS files of `settings`."""
    tls = tls_context(settings.amqp_url, settings.tls_ca_file, settings.tls_cert_file,
                      settings.tls_key_file)
    return Broker(settings.amqp_url, heartbeat=settings.heartbeat, name=name, tls=tls)
