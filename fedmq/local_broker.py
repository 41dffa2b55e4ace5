"""A broker for the demo: `fedmq run` with nothing answering on its AMQP URL.

When the URL (one, not a cluster's list) points at this machine, nothing answers there and
RabbitMQ is installed, `fedmq run` starts a private RabbitMQ node for this run only: its own
node name, data directory and the URL's port on loopback, the URL's user and vhost created in
it; the node is stopped and its directory deleted when the run ends. When RabbitMQ is not
installed, or the URL points at another machine, the run stops at once with one line saying how
to get a broker. The long-running roles (`fedmq coordinator`, `fedmq worker`) never start a
broker: they keep retrying.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

from common.errors import ConfigError

log = logging.getLogger("fedmq.run")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
NODE_NAME = "fedmq-demo"
START_SECONDS = 120.0


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def rabbitmq_script(name: str) -> str | None:
    """The path of a RabbitMQ script (rabbitmq-server, rabbitmqctl), if RabbitMQ is installed."""
    packaged = Path("/usr/lib/rabbitmq/bin") / name  # Debian: runs as whoever calls it
    if packaged.exists():
        return str(packaged)
    return shutil.which(name)


class LocalNode:
    """A private RabbitMQ node on 127.0.0.1:`port`, data in a temporary directory."""

    def __init__(self, port: int, config: str = "") -> None:
        self.port = port
        self.config = config  # more rabbitmq.conf lines (e.g. a benchmark's max_message_size)
        self.node = f"{NODE_NAME}-{port}@localhost"
        self.directory = Path(tempfile.mkdtemp(prefix="fedmq-broker-"))
        self.as_rabbitmq = os.getuid() == 0 and _has_user("rabbitmq")

    def _run(self, script: str, *args: str, server: bool = False) -> None:
        path = rabbitmq_script(script)
        assert path is not None
        d = self.directory
        home = "/var/lib/rabbitmq" if self.as_rabbitmq else os.environ.get("HOME", str(d))
        env = {**os.environ, "HOME": home}
        if server:
            env |= {"RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(self.port + 20000),
                    "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(d / "log"), "RABBITMQ_PID_FILE": str(d / "pid")}
        subprocess.run([path, *args], env=env, cwd=d, check=True, timeout=START_SECONDS,
                       preexec_fn=_demote if self.as_rabbitmq else None,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, user: str, password: str, vhost: str) -> None:
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n{self.config}\n")
        (self.directory / "enabled_plugins").write_text("[].\n")
        if self.as_rabbitmq:
            for path in [self.directory, *self.directory.rglob("*")]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        self._run("rabbitmq-server", "-detached", server=True)
        deadline = time.monotonic() + START_SECONDS
        while True:  # await_startup fails at once until the detached node has registered
            try:
                self._run("rabbitmqctl", "-n", self.node, "await_startup")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if vhost != "/":
            self._run("rabbitmqctl", "-n", self.node, "add_vhost", vhost)
        if user != "guest":
            self._run("rabbitmqctl", "-n", self.node, "add_user", user, password)
        self._run("rabbitmqctl", "-n", self.node, "set_permissions", "-p", vhost, user,
                  ".*", ".*", ".*")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("rabbitmqctl", "-n", self.node, "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def _address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    default = 5671 if parsed.scheme == "amqps" else 5672
    return parsed.hostname or "127.0.0.1", parsed.port or default


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _demote() -> None:
    user = pwd.getpwnam("rabbitmq")
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


@contextlib.contextmanager
def broker_for(urls: str | Sequence[str]) -> Iterator[None]:
    """Make sure a broker answers on one of `urls` for the duration of the block (see the
    module doc); a private node is started for a single local URL only, never for a cluster."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    addresses = [_address(url) for url in urls]
    if any(answers(host, port) for host, port in addresses):
        yield
        return
    how = ("`rabbitmq-server -detached` to start an installed RabbitMQ, `apt-get install "
           "rabbitmq-server` to install it, or --amqp-url to use another broker")
    if len(urls) > 1:
        tried = ", ".join(f"{host}:{port}" for host, port in addresses)
        raise ConfigError(f"no node of the cluster answers ({tried}, --amqp-url); start them, "
                          f"or give one local URL and fedmq run starts a private broker there")
    parsed = urllib.parse.urlparse(urls[0])
    host, port = addresses[0]
    if host not in LOCAL_HOSTS:
        raise ConfigError(f"nothing answers on {host}:{port} (--amqp-url); start the broker "
                          f"there, or use {how}")
    if rabbitmq_script("rabbitmq-server") is None or rabbitmq_script("rabbitmqctl") is None:
        raise ConfigError(f"nothing answers on {host}:{port} and RabbitMQ is not installed; "
                          f"use {how}")
    node = LocalNode(port)
    log.warning("nothing answers on %s:%d: starting a private RabbitMQ node (%s) for this run",
                host, port, node.node)
    try:
        node.start(urllib.parse.unquote(parsed.username or "guest"),
                   urllib.parse.unquote(parsed.password or "guest"),
                   urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/")
        yield
    finally:
        node.stop()
        log.info("stopped the private RabbitMQ node %s", node.node)
