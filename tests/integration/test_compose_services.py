"""The compose file's services, run as local processes against the local broker: each service's
command (the image's `fedmq` entry point plus the service's `command`) with the service's own
environment, its host name `rabbitmq` mapped to the local broker and its vhost and users to the
definitions loaded into a fresh vhost. A short job completes with the least-privilege users;
its metrics endpoint, `fedmq watch` and `fedmq status` show what happened."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common import wire
from common.amqp import Broker
from common.messages import ModelRequest
from common.topology import MODEL_REQUEST_KEY, UPDATE_KEY, Topology
from tests.deploy_support import compose_config, entrypoint, fedmq_services
from tests.integration.support import Proc, Processes, read_summary, wait_for
from tests.integration.vhost import LoadedDefinitions, definitions_in_fresh_vhost

pytestmark = pytest.mark.integration
TOPOLOGY = Topology()  # the compose file runs one job with the plain names
MAX_UPDATES = 12
WORKERS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ComposeProject:
    """Starts compose services as processes, the way `docker compose up` would start them."""

    def __init__(self, loaded: LoadedDefinitions, procs: Processes) -> None:
        assert entrypoint() == ["fedmq"], "the image's entry point is the fedmq command"
        self.services = fedmq_services(compose_config())
        self.loaded = loaded
        self.procs = procs

    def env(self, service: str, **overrides: Any) -> dict[str, str]:
        env = {key: str(value) for key, value in self.services[service]["environment"].items()}
        for key in ("FEDMQ_AMQP_URL", "FEDMQ_MANAGEMENT_URL"):
            if key in env:
                env[key] = self.loaded.rewrite_url(env[key])
        return env | {key: str(value) for key, value in overrides.items()}

    def argv(self, service: str, command: list[str] | None = None) -> list[str]:
        # `fedmq` is `python -m fedmq` of this checkout
        return [sys.executable, "-m", "fedmq", *(command or self.services[service]["command"])]

    def start(self, service: str, name: str, **overrides: Any) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")}
        log_path = self.procs.workdir / f"{name}.log"
        with log_path.open("wb") as output:
            process = subprocess.Popen(self.argv(service), env=env | self.env(service, **overrides),
                                       stdout=output, stderr=subprocess.STDOUT)
        proc = Proc(service, name, process, log_path)
        self.procs.started.append(proc)
        return proc

    def run(self, service: str, command: list[str]) -> str:
        """`docker compose run --rm <service> <command>`: the service's env, another command."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")}
        result = subprocess.run(self.argv(service, command), env=env | self.env(service),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture
def loaded() -> Iterator[LoadedDefinitions]:
    with definitions_in_fresh_vhost() as definitions:
        yield definitions


def scrape(port: int) -> dict[str, float]:
    """Every sample of the metrics endpoint, keyed `name{label=value,...}`."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def consumers_in_status(output: str) -> dict[str, int]:
    """queue name -> consumers column of `fedmq status`."""
    rows = [line.split() for line in output.splitlines()]
    return {row[0]: int(row[4]) for row in rows if len(row) == 7 and row[0].startswith("fedmq.")}


def inject_bad_messages(worker_url: str) -> None:
    """What a misbehaving worker can still send: garbage as an update, and a model request whose
    reply would go to the tasks queue (which the worker itself may not write to)."""
    broker = Broker(worker_url, name="fedmq-test-bad-worker")
    try:
        broker.publish(TOPOLOGY.inbox, UPDATE_KEY, b"\xc1 this is not msgpack")
        broker.publish(TOPOLOGY.inbox, MODEL_REQUEST_KEY,
                       wire.encode(ModelRequest(worker_id="bad-worker")), reply_to=TOPOLOGY.tasks)
    finally:
        broker.close()


def test_the_compose_services_complete_a_job_with_least_privilege_users(
        loaded: LoadedDefinitions, procs: Processes, tmp_path: Path) -> None:
    # Given every fedmq service of the compose file, started from its own command and env;
    # overridden only: where results go (a container path), the metrics port (the host's may be
    # taken), and the job length (a short job)
    project = ComposeProject(loaded, procs)
    assert set(project.services) == {"coordinator", "worker", "monitor"}
    out, port = tmp_path / "results", free_port()
    monitor = project.start("monitor", "monitor")
    coordinator = project.start("coordinator", "coordinator", FEDMQ_OUT=out,
                                FEDMQ_METRICS_PORT=port, FEDMQ_MAX_UPDATES=MAX_UPDATES)
    for replica in range(WORKERS):
        project.start("worker", f"worker-{replica}")

    # When the job runs and a worker sends a garbage update and a misdirected model request
    wait_for(lambda: " version " in monitor.log(), 120, "the first version event")
    inject_bad_messages(project.env("worker")["FEDMQ_AMQP_URL"])

    # Then the job completes, with the garbage rejected and the misdirected request ignored
    wait_for(lambda: (out / "summary.json").exists(), 120, "the coordinator's summary")
    summary = read_summary(out)
    assert summary["updates_applied"] == MAX_UPDATES, procs.logs()
    assert summary["rejected_by_reason"] == {"decode_error": 1}
    assert summary["workers"] == WORKERS
    assert "ignored model request from bad-worker" in coordinator.log()

    # And the metrics endpoint (kept up after the job) shows that run's counts
    metrics = scrape(port)
    assert metrics["fedmq_updates_applied_total"] == summary["updates_applied"]
    assert metrics["fedmq_updates_rejected_total{reason=decode_error}"] == 1
    assert metrics["fedmq_update_staleness_count"] == summary["updates_applied"]
    assert metrics["fedmq_worker_train_seconds_count"] == summary["updates_applied"]
    assert metrics["fedmq_global_version"] == summary["versions"]
    assert metrics["fedmq_eval_accuracy"] == pytest.approx(summary["final_accuracy"])
    coordinator.process.terminate()
    assert procs.wait(coordinator, 30) == 0

    # And `fedmq status` lists the queues with one consumer of the tasks per worker
    status = wait_for(lambda: (lambda out: out if consumers_in_status(out).get(TOPOLOGY.tasks)
                               == WORKERS else None)(project.run("monitor", ["status"])),
                      30, "status to show the workers on the tasks queue")
    assert {TOPOLOGY.tasks, TOPOLOGY.updates, TOPOLOGY.dead,
            TOPOLOGY.shard(0)} <= set(consumers_in_status(status))

    # And `fedmq watch` showed the progress live
    watched = monitor.log()
    for line in ("evaluation ", "rejected ", "code=decode_error", "finished ",
                 f"applied={MAX_UPDATES}"):
        assert line in watched, watched
