"""Reading the deployment files as Docker would: `docker-compose config`, the Dockerfile, the
broker's definitions and config. Shared by the unit tests (the files are right) and the
integration tests (what the files say works against the local broker)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_TLS_FILE = ROOT / "docker-compose.tls.yml"  # the override that turns TLS on
DOCKERFILE = ROOT / "Dockerfile"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
RABBITMQ_TLS_CONF = ROOT / "deploy" / "rabbitmq" / "tls.conf"
USERS_SCRIPT = ROOT / "deploy" / "rabbitmq" / "users.sh"

# The passwords the tests give docker-compose.yml (it reads them from .env or the environment and
# refuses to start without them): one per broker user, named in definitions.json.
TEST_PASSWORDS = {"FEDMQ_ADMIN_PASSWORD": "test-admin-2f8d0c",
                  "FEDMQ_COORDINATOR_PASSWORD": "test-coordinator-91ab4e",
                  "FEDMQ_WORKER_PASSWORD": "test-worker-5c7e12",
                  "FEDMQ_OBSERVER_PASSWORD": "test-observer-07d3aa",
                  "FEDMQ_HELPER_PASSWORD": "test-helper-6e1f3b"}


def compose_env() -> dict[str, str]:
    """The environment for docker-compose: this one, with the test passwords, and no .env file
    of the checkout in the way (the environment wins over .env)."""
    return {**os.environ, **TEST_PASSWORDS}


def password_of(user: dict[str, Any]) -> str:
    """The test password of a definitions.json user (its password_hash names the variable)."""
    return TEST_PASSWORDS[user["password_hash"]]


def rendered_definitions() -> dict[str, Any]:
    """definitions.json as the broker-users service writes it for the test passwords."""
    spec = definitions()
    for user in spec["users"]:
        user["password_hash"] = hash_password(password_of(user))
    return spec


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256 of `password` (what users.sh writes)."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@functools.cache
def compose_config(*overrides: Path, base: Path | None = None,
                   extra_env: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The compose file (`base`, default docker-compose.yml), with any override files on top
    (`-f docker-compose.yml -f ...`), as `docker-compose config` validates, merges and resolves
    them (anchors merged), in `compose_env()` plus `extra_env` (name, value pairs)."""
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is required (Debian: apt-get install docker-compose; .ci/run does)"
    files = [arg for path in (base or COMPOSE_FILE, *overrides) for arg in ("-f", str(path))]
    result = subprocess.run([tool, *files, "config"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**compose_env(), **dict(extra_env)})
    assert result.returncode == 0, f"docker-compose config refused the file:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def fedmq_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the image built from this repository's Dockerfile."""
    return {name: service for name, service in config["services"].items()
            if Path(service.get("build", {}).get("context", "/nonexistent")) == ROOT}


def dockerfile_instruction(name: str) -> list[str]:
    """Every argument line of a Dockerfile instruction (FROM, USER, ENTRYPOINT, ...)."""
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE.read_text(),
                                                     re.MULTILINE)]


def entrypoint() -> list[str]:
    (line,) = dockerfile_instruction("ENTRYPOINT")
    parsed: list[str] = json.loads(line)
    return parsed


def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text())
    return loaded


def rabbitmq_conf(path: Path = RABBITMQ_CONF) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes, as `docker-compose config` prints them."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def password_matches(password_hash: str, password: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.username or "", parts.password or ""


def published_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    """A service's published ports as {host_ip, published, target}, whichever form
    `docker-compose config` printed them in ("127.0.0.1:5672:5672/tcp" or a mapping)."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append({"host_ip": port.get("host_ip", "0.0.0.0"),
                          "published": int(port["published"]), "target": int(port["target"])})
            continue
        *host, published, target = str(port).split("/")[0].split(":")
        ports.append({"host_ip": host[0] if host else "0.0.0.0", "published": int(published),
                      "target": int(target)})
    return ports
