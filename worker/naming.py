"""What a worker is called: in the management UI's connections, the logs, history.csv and the
coordinator's task ownership."""

from __future__ import annotations

import os
import secrets
import socket

from common.errors import ConfigError
from common.identity import Identity


def default_worker_id(hostname: str, pid: int) -> str:
    """host-pid, unique among processes of one machine. A container's main process is pid 1 in
    every replica, and replicas sharing the host's network (network_mode: host) share its name
    too: there a random suffix tells the replicas apart (in the management UI's connections,
    logs and history.csv)."""
    if pid == 1:
        return f"{hostname}-{secrets.token_hex(3)}"
    return f"{hostname}-{pid}"


def worker_id(configured: str, identity: Identity | None) -> str:
    """The configured id; a sealed worker is its identity's name (and must be configured so)."""
    if identity is None:
        return configured or default_worker_id(socket.gethostname(), os.getpid())
    if configured and configured != identity.name:
        raise ConfigError(f"worker_id {configured!r} differs from the identity's "
                          f"name {identity.name!r}")
    return identity.name
