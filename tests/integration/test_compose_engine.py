"""`docker compose up --scale worker=4` on a real Docker engine, on RabbitMQ 3.10 (Debian bookworm)
and RabbitMQ 4.0 (Debian trixie): the project's docker-compose.yml and Dockerfile, unchanged, with
a test override that keeps every packet on loopback (compose_engine.py).

A user's session with the README's commands, on RabbitMQ 4.0: the stack comes up; the observer
sees four consumers on fedmq.tasks and the job's queues in the management API, and the queues and
each worker's connection in the management UI (headless Chromium; the README's screenshots); a
worker container is killed and `up -d --scale worker=4` starts a replacement that takes the dead
one's shard; the coordinator container is killed and restarted and resumes from its checkpoint;
the job (docker-compose.yml's 400 updates) ends with final_accuracy >= 0.94 and every confirmed
update accounted for (the ledger audit); the results come out with the README's `docker cp`
command; `guest` is refused; the worker user gets ACCESS_REFUSED outside its permissions; the
containers run as the image's non-root user. On RabbitMQ 3.10 the same scenario but the browser
(the README's screenshots come from the current generation). Everything is torn down, volumes
too, even when a step fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.amqp import Broker, BrokerRefused
from common.errors import BrokerUnavailable
from common.topology import Topology
from fedmq.management import Management
from tests.deploy_support import ROOT, compose_config, compose_env
from tests.integration.audit import audit, tap_updates, tapped_updates
from tests.integration.compose_engine import (
    BOOKWORM,
    TRIXIE,
    ComposeStack,
    Generation,
    container_log,
    docker,
    ensure_images,
    inspect,
    metrics_version,
    password,
    wait_exit,
)
from tests.integration.management_ui import management_ui
from tests.integration.support import wait_for

pytestmark = pytest.mark.integration
TOPOLOGY = Topology()  # the compose file runs one job with the plain names, in the vhost fedmq
WORKERS = 4
SCREENSHOTS = ROOT / "docs" / "img"
JOB_QUEUES = [TOPOLOGY.tasks, TOPOLOGY.updates, TOPOLOGY.dead, TOPOLOGY.model_requests,
              *(TOPOLOGY.shard(i) for i in range(WORKERS))]
# Both generations run the whole scenario on the job of docker-compose.yml (400 updates), each
# task made 0.3 s longer so that the kills land mid-job on a busy machine. The coordinator's
# metrics endpoint does not linger after the job (the compose file keeps it 60 s).
JOB = {"worker": {"FEDMQ_TRAIN_DELAY_SECONDS": "0.3"},
       "coordinator": {"FEDMQ_METRICS_LINGER_SECONDS": "0"}}


@pytest.fixture(scope="module")
def images() -> None:
    try:
        ensure_images()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def stack(request: pytest.FixtureRequest, images: None, tmp_path: Path) -> Iterator[ComposeStack]:
    gen: Generation = request.param
    compose = ComposeStack(gen, tmp_path, JOB)
    compose.down()  # a stack left over by an interrupted run
    try:
        yield compose
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print("\n".join(compose.log[-40:]))
            for service in ("rabbitmq", "coordinator", "worker"):
                print(compose.logs(service)[-6000:])
        compose.down()
        leftovers = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project="
                                                    f"{gen.project}").split()
        volumes = docker("volume", "ls", "-q", "--filter", f"name={gen.project}_").split()
        assert not leftovers and not volumes, (leftovers, volumes)


def admin(gen: Generation) -> Broker:
    return Broker(gen.amqp_url("fedmq-admin", password("admin"), host="127.0.0.1"),
                  name="fedmq-test-admin")


def observer(gen: Generation) -> Management:
    return Management(gen.management_url("fedmq-observer", password("observer"), "127.0.0.1"),
                      vhost="fedmq")


def version(gen: Generation) -> int:
    return metrics_version(gen.metrics_port)


def leased_shard(container: str) -> tuple[int] | None:
    """The shard the container's worker leased last, as a 1-tuple (shard 0 is falsy)."""
    found = re.findall(r"leased shard (\d+)/", container_log(container))
    return (int(found[-1]),) if found else None


def broker_starts(stack: ComposeStack) -> Broker:
    """`up -d rabbitmq` (with broker-users before it); then the admin can connect."""
    stack.up(0, "rabbitmq")

    def connected() -> Broker | None:
        try:
            return admin(stack.gen)
        except (BrokerUnavailable, BrokerRefused):
            return None

    return wait_for(connected, 180, "the compose broker accepting the admin", every=2.0)


def the_observer_sees_the_job(stack: ComposeStack) -> None:
    watching = observer(stack.gen)
    wait_for(lambda: (watching.queue(TOPOLOGY.tasks) or {}).get("consumers") == WORKERS, 240,
             f"{WORKERS} consumers on {TOPOLOGY.tasks}", every=2.0)
    names = {queue["name"] for queue in watching.queues()}
    assert set(JOB_QUEUES) <= names, sorted(names)
    for shard in range(WORKERS):
        assert (watching.queue(TOPOLOGY.shard(shard)) or {}).get("consumers") == 1, shard


def the_browser_shows_the_job(stack: ComposeStack, workers: list[str]) -> None:
    """The observer in the management UI: the job's queues and each worker's connection."""
    connection_names = [f"fedmq-worker-{worker_id(container)}" for container in workers]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with management_ui(f"http://127.0.0.1:{stack.gen.management_port}") as ui:
        ui.login("fedmq-observer", password("observer"))
        ui.open("queues", JOB_QUEUES, SCREENSHOTS / "management-queues.png")
        ui.open("connections", [*connection_names, "fedmq-coordinator"],
                SCREENSHOTS / "management-connections.png")


def worker_id(container: str) -> str:
    found = re.findall(r"worker (\S+) trains on", container_log(container))
    assert found, f"{container[:12]} has not started training"
    return str(found[-1])


def the_containers_run_as_the_image_user(stack: ComposeStack) -> None:
    for service in ("coordinator", "worker", "monitor"):
        for container in stack.running(service):
            assert inspect(container)["Config"]["User"] == "fedmq", service
            uid = docker("exec", container, "id", "-u").strip()
            assert uid == "10001", f"{service} runs as uid {uid}"


def a_killed_worker_is_replaced_on_its_shard(stack: ComposeStack) -> None:
    workers = stack.running("worker")
    victim = workers[0]
    (shard,) = wait_for(lambda: leased_shard(victim), 60, "the victim's lease")
    old_id = worker_id(victim)
    docker("kill", victim)
    assert wait_exit(victim, 60) == 137
    # the README's command after a kill: Compose starts the dead replica's container again (a new
    # process, so a new worker with a name of its own), or a new one
    stack.up(WORKERS)
    running = stack.running("worker")
    assert len(running) == WORKERS, running
    (replacement,) = set(running) - (set(workers) - {victim})

    def new_lease() -> tuple[int] | None:
        leases = re.findall(r"worker (\S+) leased shard (\d+)/", container_log(replacement))
        fresh = [int(found) for name, found in leases if name != old_id]
        return (fresh[-1],) if fresh else None

    (taken,) = wait_for(new_lease, 180, f"the replacement in {replacement[:12]} leasing a shard",
                        every=2.0)
    assert taken == shard, f"the replacement took shard {taken}, the dead worker held {shard}"
    wait_for(lambda: (observer(stack.gen).queue(TOPOLOGY.tasks) or {}).get("consumers")
             == WORKERS, 60, f"{WORKERS} consumers again", every=1.0)


def a_killed_coordinator_resumes(stack: ComposeStack) -> str:
    (coordinator,) = stack.containers("coordinator")
    reached = version(stack.gen)
    assert reached > 0, "the coordinator has applied updates"
    docker("kill", coordinator)
    wait_exit(coordinator, 60)
    stack.up(WORKERS)  # starts the stopped coordinator container again, same volume
    assert stack.containers("coordinator") == [coordinator]
    wait_for(lambda: re.search(r"resuming job .* at version (\d+)", container_log(coordinator)),
             180, "the coordinator resuming from its checkpoint", every=2.0)
    resumed = re.findall(r"resuming job .* at version (\d+)", container_log(coordinator))
    assert int(resumed[-1]) > 0, resumed
    return coordinator


def results_come_out(stack: ComposeStack, coordinator: str, dest: Path) -> Path:
    assert wait_exit(coordinator, 900) == 0, container_log(coordinator)[-3000:]
    # the README's command, with this stack's project and files
    compose = (f"docker-compose -p {stack.gen.project} --project-directory . "
               f"-f {stack.project_file}")
    subprocess.run(["sh", "-c", f'docker cp "$({compose} ps -q coordinator)":'
                                f"/var/lib/fedmq/results {dest}"],
                   check=True, cwd=ROOT, timeout=120, env=compose_env())
    for name in ("final_model.keras", "summary.json", "history.csv", "ledger.json",
                 "accuracy_vs_time.png"):
        assert (dest / name).is_file(), name
    return dest


def guest_and_the_worker_are_refused(gen: Generation) -> None:
    with pytest.raises(BrokerRefused) as guest:
        Broker(gen.amqp_url("guest", "guest", host="127.0.0.1").replace("/fedmq", "/"))
    assert guest.value.code == 403 and "ACCESS_REFUSED" in guest.value.text
    api = requests.get(f"http://127.0.0.1:{gen.management_port}/api/overview",
                       auth=("guest", "guest"), timeout=10)
    assert api.status_code == 401
    worker_url = gen.amqp_url("fedmq-worker", password("worker"), host="127.0.0.1")
    attempts = {"consume updates": lambda b: b.consume(TOPOLOGY.updates, lambda d: None),
                "publish a model": lambda b: b.publish(TOPOLOGY.model, "", b"forged"),
                "read the dead letters": lambda b: b.consume(TOPOLOGY.dead, lambda d: None)}
    for what, action in attempts.items():
        broker = Broker(worker_url, name="fedmq-test-worker")
        try:
            with pytest.raises(BrokerRefused) as refused:
                action(broker)
            assert refused.value.code == 403 and "ACCESS_REFUSED" in refused.value.text, what
        finally:
            broker.close()


def coordinator_settings() -> dict[str, object]:
    env = compose_config()["services"]["coordinator"]["environment"]
    return {key.removeprefix("FEDMQ_").lower(): value for key, value in env.items()
            if key in ("FEDMQ_DATASET", "FEDMQ_SEED", "FEDMQ_NUM_SHARDS")}


@pytest.mark.parametrize("stack", [BOOKWORM, TRIXIE], ids=["rabbitmq-3.10", "rabbitmq-4.0"],
                         indirect=True)
def test_compose_up_scale_workers_survives_kills_and_stays_least_privilege(
        stack: ComposeStack, tmp_path: Path) -> None:
    gen = stack.gen
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"RabbitMQ {gen.name}: {what} at {time.monotonic() - started:.0f} s")

    # Given the broker, up with the users of .env, and a tap that copies every confirmed update
    tap = broker_starts(stack)  # the admin's connection
    try:
        tap.declare(TOPOLOGY)
        tap_updates(tap, TOPOLOGY)
    finally:
        tap.close()
    step("broker up")
    # When the stack comes up with four workers
    stack.up(WORKERS)
    # Then the observer sees four consumers on the tasks queue and the job's queues
    the_observer_sees_the_job(stack)
    the_containers_run_as_the_image_user(stack)
    if gen is TRIXIE:  # the screenshots in the README come from the current generation
        the_browser_shows_the_job(stack, stack.running("worker"))
    step("four consumers seen")
    (coordinator,) = stack.containers("coordinator")
    # When a worker container is killed, Then `up -d --scale worker=4` replaces it on its shard
    wait_for(lambda: version(gen) >= 20, 240, "the job under way", every=1.0)
    a_killed_worker_is_replaced_on_its_shard(stack)
    step("worker replaced on its shard")
    # When the coordinator container is killed and started again, Then it resumes
    coordinator = a_killed_coordinator_resumes(stack)
    step("coordinator resumed")
    # Then the job ends, and its results come out with the README's command
    out = results_come_out(stack, coordinator, tmp_path / "results")
    summary = json.loads((out / "summary.json").read_text())
    print(f"RabbitMQ {gen.name}: final accuracy {summary['final_accuracy']:.4f}")
    assert summary["final_accuracy"] >= 0.94, summary
    env = json.loads(stack.project_file.read_text())["services"]["coordinator"]["environment"]
    assert summary["updates_applied"] == int(env["FEDMQ_MAX_UPDATES"])
    step("job ended, results copied")
    # and every update a worker got confirmed was decided once (the ledger audit)
    tap = admin(gen)
    try:
        audit(out, tapped_updates(tap, TOPOLOGY), coordinator_settings())
    finally:
        tap.close()
    # And the broker refuses guest, and the worker outside its permissions
    guest_and_the_worker_are_refused(gen)
    step("scenario done")
