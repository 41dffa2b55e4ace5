"""The deployment files say what the issue asks: `docker-compose config` accepts the compose file;
the broker gets the management image, a healthcheck, definitions with one user per role; workers
scale; the image is a slim Python with CPU TensorFlow, a non-root user, the `fedmq` entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from common.topology import Topology
from tests.deploy_support import (
    COMPOSE_FILE,
    COMPOSE_TLS_FILE,
    DEFINITIONS,
    ROOT,
    TEST_PASSWORDS,
    USERS_SCRIPT,
    compose_config,
    credentials,
    definitions,
    dockerfile_instruction,
    entrypoint,
    fedmq_services,
    mounts,
    password_matches,
    password_of,
    published_ports,
    rabbitmq_conf,
)

ROLE_USERS = {"coordinator": "fedmq-coordinator", "worker": "fedmq-worker",
              "monitor": "fedmq-observer"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def test_the_broker_is_the_official_management_image_with_a_healthcheck(
        config: dict[str, Any]) -> None:
    broker = config["services"]["rabbitmq"]
    image, _, tag = broker["image"].partition(":")
    assert image == "rabbitmq" and tag.endswith("-management")
    assert int(tag.split(".")[0]) >= 4, "a current (4.x) RabbitMQ"
    assert broker["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert any(p["target"] == 15672 for p in published_ports(broker)), "the UI is published"


def test_every_published_port_is_on_loopback_unless_the_user_opts_in(
        config: dict[str, Any]) -> None:
    published = [(name, port) for name, service in config["services"].items()
                 for port in published_ports(service)]
    assert {port["target"] for _, port in published} == {5672, 15672, 9100}, published
    assert all(port["host_ip"] == "127.0.0.1" for _, port in published), published


def test_the_broker_loads_the_definitions_and_limits_message_size(config: dict[str, Any]) -> None:
    broker_mounts = mounts(config["services"]["rabbitmq"])
    conf = rabbitmq_conf()
    assert conf["definitions.import_backend"] == "local_filesystem"
    definitions_target = PurePosixPath(conf["definitions.local.path"])
    # the broker reads the definitions broker-users wrote (from the template) into their volume
    volume = broker_mounts[str(definitions_target.parent)]
    users = config["services"]["broker-users"]
    assert mounts(users)[str(definitions_target.parent)] == volume
    assert mounts(users)[users["entrypoint"][2]] == str(ROOT / "deploy/rabbitmq/definitions.json")
    assert users["entrypoint"][3] == str(definitions_target)
    assert config["services"]["rabbitmq"]["depends_on"]["broker-users"]["condition"] == \
        "service_completed_successfully"
    assert PurePosixPath("/etc/rabbitmq/conf.d") in {PurePosixPath(t).parent
                                                     for t in broker_mounts}
    max_size = int(conf["max_message_size"])
    for service in fedmq_services(config).values():
        declared = service["environment"].get("FEDMQ_MAX_MESSAGE_BYTES")
        assert declared is None or int(declared) <= max_size


def test_definitions_have_one_user_per_role_with_the_compose_passwords(
        config: dict[str, Any]) -> None:
    users = {u["name"]: u for u in definitions()["users"]}
    # (fedmq-helper: secure aggregation's helper, run by another party at its own site, so no
    # service of this compose file uses it; the broker only provisions its user)
    assert set(users) == {"fedmq-admin", "fedmq-helper", *ROLE_USERS.values()}
    assert users["fedmq-admin"]["tags"] == ["administrator"]
    assert users["fedmq-worker"]["tags"] == [] and users["fedmq-coordinator"]["tags"] == []
    services = fedmq_services(config)
    for service_name, user in ROLE_USERS.items():
        name, password = credentials(services[service_name]["environment"]["FEDMQ_AMQP_URL"])
        assert name == user, f"{service_name} connects as its own role's user"
        # the URL's password is the variable users.sh hashes into the broker's definitions
        assert password == password_of(users[user]), user
    vhosts = {p["vhost"] for p in definitions()["permissions"]}
    assert vhosts == {"fedmq"} and {"name": "fedmq"} in definitions()["vhosts"]


def test_no_password_is_written_in_the_compose_files_or_the_readme() -> None:
    texts = {path.name: path.read_text() for path in
             (COMPOSE_FILE, COMPOSE_TLS_FILE, ROOT / "README.md", DEFINITIONS)}
    for name, text in texts.items():
        for password in TEST_PASSWORDS.values():
            assert password not in text, name
        assert "demo-secret" not in text, name
    assert all(re.fullmatch(r"FEDMQ_[A-Z]+_PASSWORD", u["password_hash"])
               for u in definitions()["users"]), "definitions hold variable names, not hashes"


def test_docker_compose_refuses_to_start_without_the_passwords() -> None:
    # Given no .env and no password in the environment
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    # When docker-compose reads the file, Then it stops at once naming the missing variable
    result = subprocess.run(["docker-compose", "--project-directory", str(ROOT / "deploy"),
                             "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=ROOT)
    assert result.returncode != 0
    assert "set it in .env (deploy/make-env > .env)" in result.stderr, result.stderr


def users_script(tmp_path: Path, **passwords: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")} | passwords
    return subprocess.run(["bash", str(USERS_SCRIPT), str(DEFINITIONS),
                           str(tmp_path / "definitions.json")], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_broker_users_get_salted_hashes_of_the_env_passwords(tmp_path: Path) -> None:
    # When users.sh (the broker-users service) runs with the passwords in its environment
    result = users_script(tmp_path, **TEST_PASSWORDS)
    assert result.returncode == 0, result.stderr
    # Then each user's hash is RabbitMQ's salted SHA-256 of its password, and nothing else changed
    written = json.loads((tmp_path / "definitions.json").read_text())
    for user, template in zip(written["users"], definitions()["users"], strict=True):
        assert password_matches(user["password_hash"], password_of(template)), user["name"]
        assert {**user, "password_hash": None} == {**template, "password_hash": None}
    assert written["permissions"] == definitions()["permissions"]
    assert not set(TEST_PASSWORDS.values()) & set((tmp_path / "definitions.json").read_text()
                                                  .split('"'))


@pytest.mark.parametrize(("password", "says"), [
    ("", "FEDMQ_WORKER_PASSWORD is not set"),
    ("change-me", "FEDMQ_WORKER_PASSWORD is still the example value from .env.example"),
    ("short", "must be at least 12 characters"),
    ("with spaces and @ in it", "must be at least 12 characters"),
])
def test_the_broker_users_refuse_missing_example_and_unsafe_passwords(
        tmp_path: Path, password: str, says: str) -> None:
    # Given every password set but the worker's, which is missing, the example or unusable
    result = users_script(tmp_path, **(TEST_PASSWORDS | {"FEDMQ_WORKER_PASSWORD": password}))
    # Then the script stops with one line saying what to do, and writes no definitions
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "definitions.json").exists()


def test_the_example_env_lists_every_password_with_a_refused_value() -> None:
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert set(example) == set(TEST_PASSWORDS)
    assert all(value.startswith("change-me") for value in example.values())
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), "secrets stay out of images"


def test_worker_permissions_are_least_privilege() -> None:
    worker = next(p for p in definitions()["permissions"] if p["user"] == "fedmq-worker")
    assert worker["configure"] == r"^amq\.gen-.*$", "workers declare only their private queues"
    assert "amq\\.default" not in worker["write"], "the default exchange reaches every queue"
    for granted in ("tasks", "model", "shards"):
        assert granted in worker["read"]
    for refused in ("updates", "dead", "events"):
        assert refused not in worker["read"] + worker["write"]


def test_helper_permissions_are_least_privilege() -> None:
    helper = next(p for p in definitions()["permissions"] if p["user"] == "fedmq-helper")
    assert helper["configure"] == "^$", "the coordinator declares the helper's queues"
    assert "amq\\.default" not in helper["write"], "the default exchange reaches every queue"
    assert re.fullmatch(helper["write"], Topology("j", secure=True).helper_outbox)
    assert re.fullmatch(helper["read"], Topology("j", secure=True).helper_requests)
    for refused in ("updates", "tasks", "inbox", "mask-sums", "model", "dead", "events"):
        assert refused not in helper["read"] + helper["write"]


def test_the_worker_service_scales(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in worker, f"{fixed} would stop `--scale worker=N`"
    assert "FEDMQ_SHARD_INDEX" not in worker["environment"], "replicas lease their shards"
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_the_coordinator_keeps_its_results_in_a_volume(config: dict[str, Any]) -> None:
    coordinator = config["services"]["coordinator"]
    out = PurePosixPath(coordinator["environment"]["FEDMQ_OUT"])
    targets = [PurePosixPath(t) for t in mounts(coordinator)]
    assert any(out == t or t in out.parents for t in targets)
    assert coordinator["environment"]["FEDMQ_METRICS_ADDRESS"] == "0.0.0.0"
    assert coordinator["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_the_image_is_slim_cpu_only_non_root_with_the_fedmq_entry_point() -> None:
    (base,) = dockerfile_instruction("FROM")
    args = dict(arg.split("=", 1) for arg in dockerfile_instruction("ARG"))
    assert base == "${PYTHON_IMAGE}", "the base is an argument (a stand-in in the engine test)"
    default = args["PYTHON_IMAGE"]
    assert default.startswith("python:") and "-slim" in default and "latest" not in default
    assert entrypoint() == ["fedmq"]
    users = dockerfile_instruction("USER")
    assert users and users[-1] not in ("root", "0")
    assert args["TENSORFLOW"].startswith("tensorflow-cpu==")


def test_the_image_installs_cpu_tensorflow_and_every_other_dependency_unchanged() -> None:
    result = subprocess.run([sys.executable, "deploy/image_requirements.py",
                             "tensorflow-cpu==2.21.0"], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    lines = result.stdout.split()
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "tensorflow-cpu==2.21.0" in lines
    assert not [line for line in lines if line.startswith("tensorflow") and "cpu" not in line]
    assert sorted(lines) == sorted(["tensorflow-cpu==2.21.0"] + [
        d for d in declared if not d.startswith("tensorflow")])


def test_no_service_is_restarted_forever_on_failure(config: dict[str, Any]) -> None:
    # A coordinator that cannot start (a corrupt checkpoint, exit code 3; a job held by
    # another coordinator, exit code 4) would otherwise be restarted for ever: the policy
    # bounds it (issue 14, item 11).
    policy = config["services"]["coordinator"]["restart"]
    kind, _, retries = policy.partition(":")
    assert kind == "on-failure" and retries.isdigit() and 1 <= int(retries) <= 10, policy
