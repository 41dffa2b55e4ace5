"""docker-compose.cluster.yml says what issue 11 asks: three brokers clustered by classic config
peer discovery with one cookie, the management UI on one, every port on loopback, and the same
coordinator, scalable workers and monitor as docker-compose.yml, given the three nodes' URLs.
`docker-compose config` validates it (the real-engine run is tests/integration's compose tests)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.settings import WorkerSettings
from tests.deploy_support import (
    ROOT,
    compose_config,
    compose_env,
    credentials,
    mounts,
    published_ports,
    rabbitmq_conf,
)

CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"
CLUSTER_CONF = ROOT / "deploy" / "rabbitmq" / "cluster.conf"
BROKERS = ("rabbitmq-0", "rabbitmq-1", "rabbitmq-2")
ROLES = ("coordinator", "worker", "monitor")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is required (Debian: apt-get install docker-compose; .ci/run does)"
    result = subprocess.run([tool, "-f", str(CLUSTER_FILE), "config"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT,
                            env={**compose_env(), "FEDMQ_ERLANG_COOKIE": "test-cookie-6a1f"})
    assert result.returncode == 0, f"docker-compose config refused the file:\n{result.stderr}"
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_three_brokers_form_one_cluster_by_classic_config_with_one_cookie(
        config: dict[str, Any]) -> None:
    conf = rabbitmq_conf(CLUSTER_CONF)
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {value for key, value in conf.items() if key.startswith("cluster_formation.classic")}
    assert listed == {f"rabbit@{name}" for name in BROKERS}
    cookies = set()
    for name in BROKERS:
        broker = config["services"][name]
        assert broker["hostname"] == name, "the node name rabbit@<hostname> is what is listed"
        assert broker["image"].endswith("-management")
        assert broker["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
        assert mounts(broker)["/etc/rabbitmq/conf.d/30-cluster.conf"] == str(CLUSTER_CONF)
        assert mounts(broker)["/etc/rabbitmq/fedmq"] == "broker-users"  # hashed from .env
        cookies.add(broker["environment"]["RABBITMQ_ERLANG_COOKIE"])
    assert cookies == {"test-cookie-6a1f"}


def test_the_cluster_file_refuses_to_start_without_its_cookie() -> None:
    tool = shutil.which("docker-compose")
    assert tool
    result = subprocess.run([tool, "-f", str(CLUSTER_FILE), "config"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=compose_env())
    assert result.returncode != 0 and "FEDMQ_ERLANG_COOKIE" in result.stderr, result.stderr


def test_the_management_ui_is_on_one_node_and_every_port_on_loopback(
        config: dict[str, Any]) -> None:
    published = [(name, port) for name, service in config["services"].items()
                 for port in published_ports(service)]
    assert all(port["host_ip"] == "127.0.0.1" for _, port in published), published
    ui = [name for name, port in published if port["target"] == 15672]
    assert ui == ["rabbitmq-0"]
    amqp = sorted(port["published"] for _, port in published if port["target"] == 5672)
    assert len(amqp) == len(set(amqp)) == 3


def test_every_role_gets_the_three_nodes_with_the_single_broker_file_s_user(
        config: dict[str, Any]) -> None:
    single = compose_config()["services"]
    for role in ROLES:
        environment = config["services"][role]["environment"]
        urls = WorkerSettings(amqp_url=environment["FEDMQ_AMQP_URL"]).amqp_urls
        assert [urlsplit(url).hostname for url in urls] == list(BROKERS), role
        one = single[role]["environment"]["FEDMQ_AMQP_URL"]
        assert {credentials(url) for url in urls} == {credentials(one)}, role
        assert {urlsplit(url).path for url in urls} == {urlsplit(one).path}, role
        assert set(config["services"][role]["depends_on"]) == set(BROKERS)
    coordinator = config["services"]["coordinator"]["environment"]
    assert coordinator["FEDMQ_QUEUE_REPLICAS"] == "3"


def test_the_worker_scales_and_the_roles_match_the_single_broker_file(
        config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in worker, f"{fixed} would stop `--scale worker=N`"
    single = compose_config()["services"]
    for role in ROLES:
        mine, theirs = config["services"][role], single[role]
        assert mine["command"] == theirs["command"] and mine["image"] == theirs["image"]
        same = {k: v for k, v in theirs["environment"].items() if "_URL" not in k}
        assert {k: mine["environment"].get(k) for k in same} == same, role
