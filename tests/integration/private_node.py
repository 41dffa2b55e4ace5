"""A private RabbitMQ node for tests that must stop, restart or reconfigure a broker (chaos, TLS).

The shared broker on 5672 is never touched: this node has its own name, ports, config, plugins
file and data directory under a temporary folder, and is deleted at the end. On Debian the server
runs as the `rabbitmq` user, so the folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.integration import partition

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
DIAGNOSTICS = "/usr/lib/rabbitmq/bin/rabbitmq-diagnostics"
PLUGINS = "/usr/lib/rabbitmq/bin/rabbitmq-plugins"


@dataclass
class PrivateNode:
    """One extra RabbitMQ node on loopback; `extra_config` lines are appended to rabbitmq.conf."""

    name: str = "fedmqtest"
    amqp_port: int = 5680
    management_port: int = 15680
    extra_config: str = ""
    advanced_config: str = ""  # an advanced.config (Erlang terms) for settings rabbitmq.conf lacks
    management: bool = True  # False: the node starts without the management plugin
    cgroup: Path | None = None  # the server starts in this cgroup (tests/integration/partition.py)
    ctl_erl_args: str = ""  # RABBITMQ_CTL_ERL_ARGS of its CLI tools (a node's net tick time)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedmq-node-")))

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def _env(self) -> dict[str, str]:
        d = self.directory
        return {**os.environ, "HOME": "/var/lib/rabbitmq", "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_DIST_PORT": str(self.amqp_port + 20000),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_PID_FILE": str(d / "pid"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config")}

    def _as_rabbitmq(self, *command: str, timeout: float = 120) -> None:
        """Run a RabbitMQ script as the rabbitmq user; only the server gets the node's env."""
        user = pwd.getpwnam("rabbitmq")
        env = self._env() if command[0] == SERVER else {**os.environ,
                                                        "HOME": "/var/lib/rabbitmq"}
        if command[0] == PLUGINS:  # the node's plugins file, but not its ports
            env["RABBITMQ_ENABLED_PLUGINS_FILE"] = str(self.directory / "enabled_plugins")

        if self.ctl_erl_args and command[0] != SERVER:
            env["RABBITMQ_CTL_ERL_ARGS"] = self.ctl_erl_args
        procs = (partition.procs_file(self.cgroup)
                 if self.cgroup is not None and command[0] == SERVER else None)

        def demote() -> None:
            if procs is not None:  # the server starts in its cgroup
                os.write(procs, b"0")
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        try:
            subprocess.run(command, env=env, cwd=self.directory, check=True,
                           timeout=timeout, preexec_fn=demote if os.getuid() == 0 else None,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            if procs is not None:
                os.close(procs)

    def write_config(self) -> None:
        (self.directory / "advanced.config").write_text(self.advanced_config or "[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            f"loopback_users = none\n{self.extra_config}\n")
        plugins = "rabbitmq_management" if self.management else ""
        (self.directory / "enabled_plugins").write_text(f"[{plugins}].\n")
        if os.getuid() == 0:
            shutil.chown(self.directory, "rabbitmq", "rabbitmq")
            for path in self.directory.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")

    def start(self) -> None:
        """Start the node and wait until AMQP and the management API answer."""
        self.write_config()
        self._as_rabbitmq(SERVER, "-detached")
        self._await_startup()
        if self.management:
            self.wait_for_management()

    def _await_startup(self, timeout: float = 120) -> None:
        """`await_startup` fails at once while the detached node has not registered yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._as_rabbitmq(CTL, "-n", self.node, "await_startup", "--timeout", "120")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_for_management(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(f"http://127.0.0.1:{self.management_port}/api/overview",
                             auth=("guest", "guest"), timeout=5).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run_tool(self, command: Sequence[str]) -> None:
        """Run a RabbitMQ script (SERVER, CTL, PLUGINS) for this node, as the rabbitmq user."""
        self._as_rabbitmq(*command)

    def diagnostics(self, *args: str) -> None:
        """`rabbitmq-diagnostics -n <node> ARGS`; raises CalledProcessError when it fails."""
        self._as_rabbitmq(DIAGNOSTICS, "-n", self.node, *args)

    def stop_app(self) -> None:
        self._as_rabbitmq(CTL, "-n", self.node, "stop_app")

    def start_app(self) -> None:
        self._as_rabbitmq(CTL, "-n", self.node, "start_app")
        self._await_startup()

    def stop(self, timeout: float = 120) -> None:
        """Stop the whole node (the Erlang VM); its data stays for a later `start`."""
        self._as_rabbitmq(CTL, "-n", self.node, "stop", timeout=timeout)

    def kill_9(self) -> None:
        """SIGKILL the node's Erlang VM, as a crashed machine: no goodbye to its peers."""
        pid = int((self.directory / "pid").read_text().strip())
        try:  # the pid file outlives a VM killed before: that pid may be another process now
            ours = self.directory.name.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return
        if not ours:  # the VM has this node's folder in its environment (RABBITMQ_MNESIA_BASE)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"{self.node} (pid {pid}) survived SIGKILL"
            time.sleep(0.05)

    def destroy(self, stop_timeout: float = 30) -> None:
        """Stop the node, or SIGKILL its VM if it has not stopped within `stop_timeout` (after a
        partition `rabbitmqctl stop` hung for 120 s in CI, and left the VM running), and delete
        its folder."""
        try:
            self.stop(timeout=stop_timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            try:
                self.kill_9()
            except (OSError, ValueError):  # no pid file: it never started
                pass
            except AssertionError as exc:  # the folder and the other nodes still go
                warnings.warn(str(exc), stacklevel=2)
        shutil.rmtree(self.directory, ignore_errors=True)


def _state(pid: int) -> str:
    """The process's state letter in /proc ("Z": a zombie, or already gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return "Z"
