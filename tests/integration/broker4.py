"""A RabbitMQ 4.0 broker in a container (Debian trixie's rabbitmq-server, the stand-in image that
`.ci/images` builds), on loopback and on its own ports, for running broker-semantics tests on
the current generation as well as the machine's 3.10 (issue 16, "4.x compatibility").

The container runs with host networking, its own node name and Erlang distribution port, and is
removed afterwards (it keeps no volume). `guest` may log in from loopback, as on the machine's
broker, so the tests run unchanged with FEDMQ_TEST_AMQP_URL / FEDMQ_TEST_MANAGEMENT_URL set.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.integration.compose_engine import TRIXIE, docker

NAME = "fedmq-test-rabbitmq4"


@dataclass(frozen=True)
class Broker4:
    amqp_port: int = 5743
    management_port: int = 15743

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def version(self) -> str:
        overview = requests.get(f"http://127.0.0.1:{self.management_port}/api/overview",
                                auth=("guest", "guest"), timeout=5).json()
        return str(overview["rabbitmq_version"])


@contextmanager
def running(workdir: Path, broker: Broker4 | None = None,
            timeout: float = 180) -> Iterator[Broker4]:
    """Start the 4.0 container, wait until its management API answers, remove it afterwards."""
    broker = broker or Broker4()
    conf = workdir / "90-ports.conf"
    conf.write_text(f"listeners.tcp.default = 127.0.0.1:{broker.amqp_port}\n"
                    f"management.tcp.ip = 127.0.0.1\n"
                    f"management.tcp.port = {broker.management_port}\n")
    subprocess.run(["docker", "rm", "-f", NAME], capture_output=True, timeout=60)  # a leftover
    docker("run", "-d", "--name", NAME, "--network", "host",
           "-e", "RABBITMQ_NODENAME=fedmq-suite-40@localhost",
           "-e", f"RABBITMQ_DIST_PORT={broker.amqp_port + 20000}",
           "-v", f"{conf}:/etc/rabbitmq/conf.d/90-ports.conf:ro", TRIXIE.image)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                broker.version()
                break
            except (requests.RequestException, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"RabbitMQ 4.0 container did not answer in {timeout:.0f}s:"
                                         f"\n{docker('logs', NAME)[-3000:]}") from None
                time.sleep(1)
        yield broker
    finally:
        subprocess.run(["docker", "rm", "-f", NAME], capture_output=True, timeout=120)
