"""Queues left by an older fedmq with other arguments (issue 14 item 5): the coordinator replaces
an unused one whose messages are disposable (model requests: workers ask again), and refuses, with
what to do, one that holds work. Found by running the README's demo on a machine with queues of
the old default job: the workers' model requests, sent into the old queue before the coordinator
started, made the demo stop."""

from __future__ import annotations

import pytest

from common.amqp import Broker, QueueMismatch
from common.topology import Topology
from fedmq.management import Management
from tests.integration.broker_tools import declare_queue

pytestmark = pytest.mark.integration


def test_an_old_model_requests_queue_with_requests_in_it_is_replaced(
        broker: Broker, topology: Topology, management: Management) -> None:
    # Given the job's model-requests queue as an older fedmq declared it, holding two requests
    broker.delete(topology.model_requests)
    declare_queue(broker, topology.model_requests, durable=True)
    for _ in range(2):
        broker.publish("", topology.model_requests, b"an old request")
    # When the coordinator declares its topology, then that queue is replaced, with expiry now
    broker.declare(topology)
    arguments = (management.queue(topology.model_requests) or {}).get("arguments", {})
    assert arguments.get("x-expires", 0) > 0, arguments


def test_an_old_tasks_queue_holding_work_is_refused_with_what_to_do(
        broker: Broker, topology: Topology) -> None:
    # Given the job's tasks queue as an older fedmq declared it, holding a task
    broker.delete(topology.tasks)
    declare_queue(broker, topology.tasks, durable=True)
    broker.publish("", topology.tasks, b"an old task")
    # When the coordinator declares its topology, then it refuses and says what to do
    with pytest.raises(QueueMismatch, match="delete_queue"):
        broker.declare(topology)
