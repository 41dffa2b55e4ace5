"""The TLS override says what docs/security.md says: `docker-compose -f docker-compose.yml -f
docker-compose.tls.yml config` accepts it; the broker loads deploy/rabbitmq/tls.conf (amqps on
5671 only, client certificates required) with the certificates it names; every fedmq service
connects with amqps to that port with its own client certificate; and `fedmq tls generate`
writes exactly the files the override mounts."""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from fedmq.cli import main
from tests.deploy_support import (
    COMPOSE_TLS_FILE,
    RABBITMQ_TLS_CONF,
    ROOT,
    compose_config,
    credentials,
    fedmq_services,
    mounts,
    published_ports,
    rabbitmq_conf,
)

TLS_DIR = ROOT / "deploy" / "tls"
TLS_FILES = ("FEDMQ_TLS_CA_FILE", "FEDMQ_TLS_CERT_FILE", "FEDMQ_TLS_KEY_FILE")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config(COMPOSE_TLS_FILE)


@pytest.fixture(scope="module")
def tls_conf() -> dict[str, str]:
    return rabbitmq_conf(RABBITMQ_TLS_CONF)


def test_the_broker_listens_only_with_tls_and_requires_client_certificates(
        tls_conf: dict[str, str]) -> None:
    assert tls_conf["listeners.tcp"] == "none", "plain AMQP is off"
    assert tls_conf["listeners.ssl.default"] == "5671"
    assert tls_conf["ssl_options.verify"] == "verify_peer"
    assert tls_conf["ssl_options.fail_if_no_peer_cert"] == "true"


def test_the_broker_mounts_tls_conf_after_its_own_config_and_the_files_it_names(
        config: dict[str, Any], tls_conf: dict[str, str]) -> None:
    broker = config["services"]["rabbitmq"]
    broker_mounts = mounts(broker)
    conf_d = {PurePosixPath(t).name: s for t, s in broker_mounts.items()
              if PurePosixPath(t).parent == PurePosixPath("/etc/rabbitmq/conf.d")}
    tls_name = next(name for name, source in conf_d.items() if source == str(RABBITMQ_TLS_CONF))
    assert sorted(conf_d)[-1] == tls_name, "loaded last, so its listener settings win"
    for option in ("cacertfile", "certfile", "keyfile"):
        source = Path(broker_mounts[tls_conf[f"ssl_options.{option}"]])
        assert source.parent == TLS_DIR, option
    assert Path(broker_mounts[tls_conf["ssl_options.cacertfile"]]).name == "ca.pem"
    assert any(p["target"] == 5671 and p["published"] == 5671 for p in published_ports(broker))


def test_every_fedmq_service_connects_with_amqps_and_its_own_client_certificate(
        config: dict[str, Any], tls_conf: dict[str, str]) -> None:
    plain = fedmq_services(compose_config())
    services = fedmq_services(config)
    assert set(services) == set(plain) == {"coordinator", "worker", "monitor"}
    broker_mounts = mounts(config["services"]["rabbitmq"])
    client_keys = set()
    for name, service in services.items():
        env, service_mounts = service["environment"], mounts(service)
        url = urlsplit(env["FEDMQ_AMQP_URL"])
        assert (url.scheme, url.hostname, url.port) == ("amqps", "rabbitmq", 5671), name
        assert credentials(env["FEDMQ_AMQP_URL"]) == credentials(
            plain[name]["environment"]["FEDMQ_AMQP_URL"]), f"{name} keeps its broker user"
        assert url.path == urlsplit(plain[name]["environment"]["FEDMQ_AMQP_URL"]).path
        sources = {key: Path(service_mounts[env[key]]) for key in TLS_FILES}
        assert all(source.parent == TLS_DIR for source in sources.values()), name
        assert str(sources["FEDMQ_TLS_CA_FILE"]) == broker_mounts[
            tls_conf["ssl_options.cacertfile"]], "the CA the broker trusts"
        assert sources["FEDMQ_TLS_CERT_FILE"].stem == sources["FEDMQ_TLS_KEY_FILE"].stem == name
        client_keys.add(sources["FEDMQ_TLS_KEY_FILE"])
        for key in TLS_FILES:
            volume = next(v for v in service["volumes"] if v.split(":")[1] == env[key])
            assert volume.endswith(":ro"), f"{name} mounts {key} read-only"
    assert len(client_keys) == len(services), "one client certificate per service"


def test_fedmq_tls_generate_writes_exactly_the_files_the_override_mounts(
        config: dict[str, Any], tmp_path: Path) -> None:
    # When the certificates are generated as docker-compose.tls.yml says
    result = CliRunner().invoke(main, ["tls", "generate", str(tmp_path), "--readable-keys"])
    assert result.exit_code == 0, result.output
    # Then every file the override mounts from deploy/tls is there, and nothing else
    mounted = {Path(source).name for service in config["services"].values()
               for source in mounts(service).values() if Path(source).parent == TLS_DIR}
    assert {p.name for p in tmp_path.iterdir()} == mounted
    # And readable keys are readable by the containers' users (demo), certificates by everyone
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in tmp_path.iterdir())


def test_fedmq_tls_generate_keeps_keys_private_by_default(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["tls", "generate", str(tmp_path), "--client", "site-a"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.glob("*.key")} == {"broker.key", "site-a.key"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.glob("*.key"))


def test_deploy_tls_is_never_committed_nor_sent_to_the_image_build() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/deploy/tls/" in ignored
    assert "deploy/tls" in (ROOT / ".dockerignore").read_text().split()
