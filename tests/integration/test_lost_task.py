"""A task lost on the way (issue 14, item 10): taken off the tasks queue and acked by someone who
never answers it. The coordinator stops waiting for it after --task-deadline, issues another task
in its place, and the job ends normally."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import wire
from common.amqp import Broker
from common.messages import TrainTask
from common.topology import Topology
from tests.integration.support import Processes, read_summary, wait_for

pytestmark = pytest.mark.integration


def test_a_lost_task_is_issued_again_after_its_deadline_and_the_job_ends(
        procs: Processes, broker: Broker, topology: Topology, tmp_path: Path) -> None:
    # Given a coordinator with a 5 s task deadline, one task in flight at a time
    out = tmp_path / "out"
    coordinator = procs.start("coordinator", dataset="digits", max_updates=3, concurrency=1,
                              task_deadline=5, out=out, drain_seconds=2)

    # When its first task is taken off the queue and acked without an answer (lost)
    def take() -> TrainTask | None:
        delivery = broker.get(topology.tasks)
        if delivery is None:
            return None
        broker.ack(delivery)
        return wire.decode(delivery.body, TrainTask)
    lost = wait_for(take, 60, "the first task")
    # and only then a worker starts
    worker = procs.start("worker", dataset="digits", shard_index=0, num_shards=1)

    # Then after the deadline the coordinator gives up on it and issues a new task, which the
    # worker trains: the job ends normally with every update applied
    assert procs.wait(coordinator, 180) == 0, coordinator.log()[-3000:]
    assert "1 tasks got no update within 5s; issuing new ones" in coordinator.log()
    summary = read_summary(out)
    # (the tasks issued while the worker was still starting, about 20 s on a busy machine,
    # may expire too: each is issued again in the same way)
    assert summary["expired_tasks"] >= 1, summary
    assert summary["updates_applied"] == 3 and summary["updates_rejected"] == 0, summary
    assert lost.task_id[:8] not in worker.log()
