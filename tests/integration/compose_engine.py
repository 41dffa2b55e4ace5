"""docker-compose.yml on a real Docker engine: the stack of one broker generation, brought up from
the project's compose file plus a test override, and torn down (volumes too) afterwards.

The override keeps every packet on loopback and away from the machine's broker: every service runs
with `network_mode: host`, the name `rabbitmq` maps to 127.0.0.1 (extra_hosts), and the compose
broker listens on its own ports (AMQP, management, Erlang distribution) under its own node name.
The images come from `.ci/images` (stand-ins built from Debian packages: no registry is pulled).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.deploy_support import ROOT, TEST_PASSWORDS, compose_config, compose_env

IMAGES_SCRIPT = ROOT / ".ci" / "images"
FEDMQ_IMAGE = "fedmq:compose-test"  # the project's Dockerfile on the stand-in Python (.ci/images)
FEDMQ_SERVICES = ("coordinator", "worker", "monitor")


class EngineMissing(AssertionError):
    """No Docker engine or compose tool, or the images could not be built (one line: what to do)."""


def ensure_images(timeout: float = 1800) -> None:
    """Run `.ci/images`: it installs and starts the engine if needed and builds what is not cached.
    When `.ci/run` already started it in the background, this waits for that run (it holds a lock)
    and then only confirms the cache."""
    if shutil.which("bash") is None or not IMAGES_SCRIPT.exists():
        raise EngineMissing(f"{IMAGES_SCRIPT} is missing")
    result = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    if result.returncode != 0:
        raise EngineMissing(f".ci/images failed (run it as root to see why): "
                            f"{result.stderr.strip().splitlines()[-1:]}")


@dataclass(frozen=True)
class Generation:
    """One RabbitMQ generation under test, with the ports this test owns for it."""

    name: str      # "3.10", "4.0"
    image: str     # the stand-in built by .ci/images
    amqp_port: int
    management_port: int
    metrics_port: int

    @property
    def project(self) -> str:
        return f"fedmq-engine-{self.name.replace('.', '')}"

    @property
    def node(self) -> str:
        return f"{self.project}@rabbitmq"

    def amqp_url(self, user: str, password: str, host: str = "rabbitmq") -> str:
        return f"amqp://{user}:{password}@{host}:{self.amqp_port}/fedmq"

    def management_url(self, user: str, password: str, host: str = "rabbitmq") -> str:
        return f"http://{user}:{password}@{host}:{self.management_port}"


BOOKWORM = Generation("3.10", "fedmq-ci/rabbitmq:3.10", 5741, 15741, 9741)
TRIXIE = Generation("4.0", "fedmq-ci/rabbitmq:4.0", 5742, 15742, 9742)


def password(role: str) -> str:
    return TEST_PASSWORDS[f"FEDMQ_{role.upper()}_PASSWORD"]


def override(gen: Generation, broker_conf: Path,
             settings: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The test override of docker-compose.yml for `gen`; `settings` adds environment variables
    to services (service -> {FEDMQ_...: value})."""
    host = {"network_mode": "host", "extra_hosts": ["rabbitmq:127.0.0.1"]}
    role_url = {"coordinator": gen.amqp_url("fedmq-coordinator", password("coordinator")),
                "worker": gen.amqp_url("fedmq-worker", password("worker")),
                "monitor": gen.amqp_url("fedmq-observer", password("observer"))}
    services: dict[str, Any] = {
        "broker-users": {"image": gen.image, "network_mode": "none"},
        "rabbitmq": {**host, "image": gen.image,
                     "environment": {"RABBITMQ_NODENAME": gen.node,
                                     "RABBITMQ_DIST_PORT": str(gen.amqp_port + 20000)},
                     "volumes": [f"{broker_conf}:/etc/rabbitmq/conf.d/90-test-ports.conf:ro"]},
    }
    for service in FEDMQ_SERVICES:
        services[service] = {**host, "image": FEDMQ_IMAGE,
                             "environment": {"FEDMQ_AMQP_URL": role_url[service],
                                             **settings.get(service, {})}}
    services["coordinator"]["environment"] |= {"FEDMQ_METRICS_PORT": str(gen.metrics_port),
                                               "FEDMQ_METRICS_ADDRESS": "127.0.0.1"}
    services["monitor"]["environment"]["FEDMQ_MANAGEMENT_URL"] = gen.management_url(
        "fedmq-observer", password("observer"))
    return {"services": services}


def resolved(override_file: Path, base: Path | None = None,
             extra_env: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The compose file (`base`, default docker-compose.yml) with the override on top, as
    `docker-compose config` merges them, less the published ports and host names of the
    host-networked services: host networking discards the ports anyway, and docker-compose v1
    refuses both with it (compose v1 has no way for an override to remove an entry)."""
    config = copy.deepcopy(compose_config(override_file, base=base, extra_env=extra_env))
    for service in config["services"].values():
        if service.get("network_mode") == "host":
            service.pop("ports", None)
            service.pop("hostname", None)
    return config


def ports_conf(path: Path, amqp_port: int, management_port: int) -> Path:
    """A broker's conf.d file for a test: AMQP and the management API on loopback ports."""
    path.write_text(f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
                    f"management.tcp.ip = 127.0.0.1\n"
                    f"management.tcp.port = {management_port}\n")
    return path


class Stack:
    """`docker-compose -p <project> -f <resolved file>`: a compose file and its test override,
    merged and resolved once (`resolved`), run under a project name of the test's own."""

    def __init__(self, project: str, project_file: Path, env: dict[str, str] | None = None,
                 ) -> None:
        self.project = project
        self.project_file = project_file
        self.env = env or compose_env()
        self.log: list[str] = []

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        argv = ["docker-compose", "-p", self.project, "--project-directory", str(ROOT),
                "-f", str(self.project_file), *args]
        self.log.append("+ " + " ".join(argv[6:]))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                env=self.env)
        self.log.append(result.stdout + result.stderr)
        if check:
            assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-2000:]}"
        return result.stdout

    def up(self, workers: int, *services: str) -> None:
        """The README's command, detached: `up -d --scale worker=N` (no build: .ci/images built)."""
        self.compose("up", "-d", "--no-build", "--scale", f"worker={workers}", *services,
                     timeout=600)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def running(self, service: str) -> list[str]:
        return [c for c in self.containers(service) if inspect(c)["State"]["Running"]]

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False)

    def down(self) -> None:
        """Everything goes, volumes too, whatever state the stack is in."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


class ComposeStack(Stack):
    """docker-compose.yml with the test override, for one generation."""

    def __init__(self, gen: Generation, workdir: Path,
                 settings: dict[str, dict[str, str]]) -> None:
        self.gen = gen
        self.workdir = workdir
        conf = ports_conf(workdir / "90-test-ports.conf", gen.amqp_port, gen.management_port)
        self.override = workdir / "docker-compose.engine-test.yml"
        self.override.write_text(json.dumps(override(gen, conf, settings), indent=2))  # YAML ⊃ JSON
        project_file = workdir / "docker-compose.resolved.yml"
        project_file.write_text(json.dumps(resolved(self.override), indent=2))
        super().__init__(gen.project, project_file)


def metrics_version(port: int) -> int:
    """The coordinator's global version, from its metrics endpoint on `port` (-1: not
    serving)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return -1
    found = re.search(r"^fedmq_global_version (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def container_log(container: str) -> str:
    """Everything the container printed (the roles log to stderr)."""
    result = subprocess.run(["docker", "logs", container], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    return result.stdout


def inspect(container: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(docker("inspect", container))
    return found[0]


def wait_exit(container: str, timeout: float) -> int:
    """The exit code of `container` once it has stopped (and is not being restarted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = inspect(container)["State"]
        if not state["Running"] and not state["Restarting"]:
            return int(state["ExitCode"])
        time.sleep(1)
    raise AssertionError(f"container {container[:12]} still running after {timeout:.0f}s")
