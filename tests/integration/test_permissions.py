"""The compose file's users and permissions, loaded into the local broker (a vhost of their own):
a worker may read tasks, the model and its shard lease and write updates, and nothing else; the
secure-aggregation helper may read its requests and answer through its own exchange, and nothing
else."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from common import leases, wire
from common.amqp import Broker, BrokerRefused
from common.connection import await_declared
from common.messages import Event
from common.topology import UPDATE_KEY, Topology
from tests.deploy_support import (
    compose_config,
    credentials,
    definitions,
    fedmq_services,
    password_of,
)
from tests.integration.vhost import LoadedDefinitions, definitions_in_fresh_vhost

pytestmark = pytest.mark.integration
TOPOLOGY = Topology()  # the plain names, as in the compose file: the vhost isolates the test
SECURE = Topology(secure=True)  # the same, with secure aggregation's queues and exchange


@pytest.fixture(scope="module")
def loaded() -> Iterator[LoadedDefinitions]:
    with definitions_in_fresh_vhost() as definitions:
        yield definitions


def url_of(loaded: LoadedDefinitions, service: str) -> str:
    """The AMQP URL a compose service uses, pointed at the test vhost."""
    env = fedmq_services(compose_config())[service]["environment"]
    return loaded.rewrite_url(env["FEDMQ_AMQP_URL"])


@pytest.fixture(scope="module")
def declared(loaded: LoadedDefinitions) -> None:
    """The coordinator's user declares the whole topology, as the coordinator does at start."""
    coordinator = Broker(url_of(loaded, "coordinator"), name="fedmq-test-coordinator")
    try:
        coordinator.declare(SECURE)
        leases.refill(coordinator, TOPOLOGY, 2)
    finally:
        coordinator.close()


def refusal(url: str, action: Callable[[Broker], object]) -> BrokerRefused | None:
    """What the broker says when `action` runs on a fresh connection (None: it was allowed)."""
    broker = Broker(url, name="fedmq-test-permissions")
    try:
        action(broker)
    except BrokerRefused as exc:
        return exc
    finally:
        broker.close()
    return None


def all_refused(url: str, attempts: dict[str, Callable[[Broker], object]]) -> None:
    """Each attempt, on a fresh connection, is refused with 403 (ACCESS_REFUSED)."""
    for what, action in attempts.items():
        refused = refusal(url, action)
        assert refused is not None and refused.code == 403, what


def landed_once(loaded: LoadedDefinitions, queue: str, nowhere_else: Sequence[str] = ()) -> None:
    """As the coordinator: one message in `queue` (then purged), none in `nowhere_else`."""
    coordinator = Broker(url_of(loaded, "coordinator"), name="fedmq-test-coordinator")
    try:
        assert coordinator.queue_depth(queue)[0] == 1
        for other in nowhere_else:
            assert coordinator.queue_depth(other)[0] == 0
        coordinator.purge(queue)
    finally:
        coordinator.close()


def test_the_worker_is_refused_updates_and_the_model_exchange(
        loaded: LoadedDefinitions, declared: None) -> None:
    worker = url_of(loaded, "worker")
    # When the worker's user consumes the updates queue, or publishes a model version
    consume_updates = refusal(worker, lambda b: b.consume(TOPOLOGY.updates, lambda d: None))
    publish_model = refusal(worker, lambda b: b.publish(TOPOLOGY.model, "", b"forged model"))
    # Then the broker refuses both with ACCESS_REFUSED
    for refused in (consume_updates, publish_model):
        assert refused is not None and refused.code == 403, refused
        assert "ACCESS_REFUSED" in refused.text


def test_the_worker_cannot_reach_other_queues_or_change_the_topology(
        loaded: LoadedDefinitions, declared: None) -> None:
    worker = url_of(loaded, "worker")
    attempts = {
        "forge a task via the default exchange":
            lambda b: b.publish("", TOPOLOGY.tasks, b"forged task"),
        "read the dead letters": lambda b: b.consume(TOPOLOGY.dead, lambda d: None),
        "read the model requests":
            lambda b: b.consume(TOPOLOGY.model_requests, lambda d: None),
        "listen to the events": lambda b: b.private_queue(TOPOLOGY.events),
        "declare the topology": lambda b: b.declare(TOPOLOGY),
        "delete the tasks queue": lambda b: b.delete(TOPOLOGY.tasks),
    }
    all_refused(worker, attempts)


def test_the_worker_can_do_everything_its_job_needs(
        loaded: LoadedDefinitions, declared: None) -> None:
    broker = Broker(url_of(loaded, "worker"), name="fedmq-test-worker")
    try:
        # the topology is there (passive checks need no permission)
        assert await_declared(broker, threading.Event(), [TOPOLOGY.tasks, TOPOLOGY.shard(0)],
                                     [TOPOLOGY.model, TOPOLOGY.inbox])
        broker.consume(broker.private_queue(TOPOLOGY.model), lambda d: None, auto_ack=True)
        broker.consume("amq.rabbitmq.reply-to", lambda d: None, auto_ack=True)
        assert broker.claim(TOPOLOGY.shard(0))
        broker.consume(TOPOLOGY.tasks, lambda d: None)
        broker.publish(TOPOLOGY.inbox, UPDATE_KEY, b"an update")
    finally:
        broker.close()
    # and its update reached the updates queue
    landed_once(loaded, TOPOLOGY.updates)


def test_the_observer_sees_events_and_nothing_else(
        loaded: LoadedDefinitions, declared: None) -> None:
    observer = url_of(loaded, "monitor")
    assert credentials(observer)[0] == loaded.users["fedmq-observer"]
    seen: list[Event] = []

    def watch_one(broker: Broker) -> None:
        queue = broker.private_queue(TOPOLOGY.events, routing_key="#")
        broker.consume(queue, lambda d: seen.append(wire.decode(d.body, Event)), auto_ack=True)
        coordinator = Broker(url_of(loaded, "coordinator"), name="fedmq-test-coordinator")
        try:
            coordinator.publish(TOPOLOGY.events, "version",
                                wire.encode(Event(name="version", job="")), persistent=False)
        finally:
            coordinator.close()
        broker.process(0.5)

    assert refusal(observer, watch_one) is None
    assert [event.name for event in seen] == ["version"]
    assert refusal(observer, lambda b: b.consume(TOPOLOGY.tasks, lambda d: None)) is not None
    assert refusal(observer, lambda b: b.publish(TOPOLOGY.inbox, UPDATE_KEY, b"x")) is not None


def helper_url(loaded: LoadedDefinitions) -> str:
    """The helper runs at another party's site, not in the compose file: its own user."""
    return loaded.url_as("fedmq-helper", password_of(
        next(u for u in definitions()["users"] if u["name"] == "fedmq-helper")))


def test_the_helper_can_do_everything_its_job_needs(
        loaded: LoadedDefinitions, declared: None) -> None:
    broker = Broker(helper_url(loaded), name="fedmq-test-helper")
    try:
        # what HelperService does: wait for its queues and exchange, consume the requests,
        # answer through its exchange (with a confirm)
        assert await_declared(broker, threading.Event(),
                              [q.name for q in SECURE.helper_queues()], [SECURE.helper_outbox])
        broker.consume(SECURE.helper_requests, lambda d: None, prefetch=1)
        broker.publish(SECURE.helper_outbox, "", b"a mask sum")
    finally:
        broker.close()
    # and the answer reached the coordinator's queue, and only it
    landed_once(loaded, SECURE.helper_answers, nowhere_else=[SECURE.updates])


def test_the_helper_is_refused_everything_else(
        loaded: LoadedDefinitions, declared: None) -> None:
    helper = helper_url(loaded)
    attempts = {
        "answer via the default exchange": lambda b: b.publish("", SECURE.helper_answers, b"x"),
        "forge a task": lambda b: b.publish("", SECURE.tasks, b"forged task"),
        "forge an update": lambda b: b.publish(SECURE.inbox, UPDATE_KEY, b"forged update"),
        "publish a model": lambda b: b.publish(SECURE.model, "", b"forged model"),
        "read the updates (shares)": lambda b: b.consume(SECURE.updates, lambda d: None),
        "read the answers": lambda b: b.consume(SECURE.helper_answers, lambda d: None),
        "listen to the model": lambda b: b.private_queue(SECURE.model),
        "declare the topology": lambda b: b.declare(SECURE),
        "delete its requests queue": lambda b: b.delete(SECURE.helper_requests),
    }
    all_refused(helper, attempts)
