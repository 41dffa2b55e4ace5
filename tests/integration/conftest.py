"""Fixtures for tests against the real RabbitMQ broker. The session sets up what it needs (a local
broker that is installed but stopped is started, its management plugin enabled: broker_setup.py);
what cannot be had fails the run with a one-line instruction, never a skip (set
FEDMQ_TEST_AMQP_URL / FEDMQ_TEST_MANAGEMENT_URL to point elsewhere)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.amqp import Broker
from common.job_removal import remove_job
from common.topology import Topology
from fedmq.management import Management
from tests.integration.broker_setup import SetupFailed, Tools, ensure_broker, ensure_management
from tests.integration.support import AMQP_URL, MANAGEMENT_URL, Processes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        ensure_broker(AMQP_URL, Tools.installed())
    except SetupFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    return AMQP_URL


@pytest.fixture(scope="session")
def management(amqp_url: str) -> Management:
    try:
        ensure_management(MANAGEMENT_URL, Tools.installed())
    except SetupFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    client = Management(MANAGEMENT_URL)
    try:
        client.queues()
    except Exception as exc:  # noqa: BLE001 - any failure means the API is not usable
        pytest.fail(f"RabbitMQ management API is required at {MANAGEMENT_URL}: {exc}",
                    pytrace=False)
    return client


def cleanup_job(amqp_url: str, topology: Topology) -> None:
    remove_job(amqp_url, topology, name="fedmq-test-cleanup")


@pytest.fixture
def topology(amqp_url: str) -> Iterator[Topology]:
    """A fresh job id, so tests never share queues; its queues are deleted afterwards."""
    topo = Topology(job=f"t{uuid.uuid4().hex[:10]}")
    yield topo
    cleanup_job(amqp_url, topo)


@pytest.fixture
def broker(amqp_url: str, topology: Topology) -> Iterator[Broker]:
    connection = Broker(amqp_url, name="fedmq-test")
    connection.declare(topology)
    yield connection
    connection.close()


@pytest.fixture
def procs(amqp_url: str, topology: Topology, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Processes]:
    processes = Processes(tmp_path, {"FEDMQ_AMQP_URL": amqp_url, "FEDMQ_JOB": topology.job,
                                     "FEDMQ_LOG_LEVEL": "INFO"})
    yield processes
    processes.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(processes.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
