"""No delivery is held past the broker's consumer_timeout: shard leases and long trainings survive
a job that runs for several times the timeout, without a channel closed by the broker (issue 14,
item 1). A private node with consumer_timeout = 10 s (the shared broker keeps its 30 minutes) that
checks it every second: a channel checks its deliveries' age at each tick, every 60 s by default,
which would leave a delivery held past the timeout a good chance of going unseen in a job this
short (RabbitMQ's own tests of the timeout shorten the tick the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.audit import audit, queues_end_empty, tap_updates, tapped_updates
from tests.integration.private_node import PrivateNode
from tests.integration.support import Processes, read_summary

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
TIMEOUT_S = 10
TICK = "[{rabbit, [{channel_tick_interval, 1000}]}].\n"  # ms; advanced.config (no conf key)
SHAPE: dict[str, Any] = {"dataset": "digits", "seed": 4, "num_shards": 3, "partition": "iid"}
# (max_staleness high and no norm bound: the long task's update is hundreds of versions old and
# must be applied; its distance from the fresh updates' median norm can pass the default bound's
# 20x, a documented limit of that bound for stale FedAsync updates, seen once in CI: 2.617 > 2.429)
JOB: dict[str, Any] = {**SHAPE, "strategy": "fedasync", "max_updates": 100000,
                       "max_seconds": 7 * TIMEOUT_S, "concurrency": 3, "drain_seconds": 120,
                       "task_deadline": 6 * TIMEOUT_S, "wait_for_workers": 3,
                       "max_staleness": 100000, "max_update_norm_factor": 0}
CLOSED = ("broker unavailable", "PRECONDITION_FAILED", "timed out", "lease revoked")


def test_leases_and_a_task_training_twice_the_consumer_timeout_survive(tmp_path: Path) -> None:
    node = PrivateNode(name="fedmqtimeout", amqp_port=5686, management_port=15686,
                       extra_config=f"consumer_timeout = {TIMEOUT_S * 1000}",
                       advanced_config=TICK)
    node.start()
    procs = Processes(tmp_path, {"FEDMQ_AMQP_URL": node.url, "FEDMQ_JOB": "timeout",
                                 "FEDMQ_LOG_LEVEL": "INFO"})
    topology = Topology(job="timeout")
    try:
        # Given a job on that node with three identical (leasing) workers, one of which trains
        # every task for twice the consumer timeout, the updates tapped
        broker = Broker(node.url, name="fedmq-test")
        broker.declare(topology)
        tap_updates(broker, topology)
        broker.close()
        out = tmp_path / "out"
        workers = [procs.start("worker", name=f"w{i}", train_delay_seconds=0.5,
                               task_hold_seconds=TIMEOUT_S / 2, **SHAPE) for i in range(2)]
        slow = procs.start("worker", name="slow", worker_id="slow",
                           train_delay_seconds=2 * TIMEOUT_S, task_hold_seconds=TIMEOUT_S / 2,
                           **SHAPE)
        coordinator = procs.start("coordinator", out=out, **JOB)

        # When the job runs for 7 times the consumer timeout
        assert procs.wait(coordinator, 7 * TIMEOUT_S + 400) == 0, coordinator.log()[-4000:]
        procs.stop_all()

        # Then every update was applied once (the ledger audit: each confirmed update decided,
        # none twice; and none rejected), a task trained for twice the timeout included, and no
        # process saw its channel closed or its lease revoked
        check = Broker(node.url, name="fedmq-test-audit")
        try:
            sent = tapped_updates(check, topology)
        finally:
            check.close()
        result = audit(out, sent, JOB)
        summary = read_summary(out)
        assert summary["updates_applied"] >= 20 and summary["updates_rejected"] == 0, summary
        assert len(result.applied) == len(sent), (len(result.applied), len(sent))
        long = [sent[u].train_seconds for u in result.applied if sent[u].worker_id == "slow"]
        assert long and min(long) >= 2 * TIMEOUT_S, (long, slow.log()[-3000:])
        for proc in [*workers, slow, coordinator]:
            seen = [word for word in CLOSED if word in proc.log()]
            assert not seen, f"{proc.name}: {seen}\n{proc.log()[-3000:]}"
        broker_log = "".join(p.read_text(errors="replace")
                             for p in (node.directory / "log").glob("*.log"))
        assert "acknowledgement" not in broker_log, "the broker closed a channel on timeout"
        queues_end_empty(Management(node.management_url), topology)
    finally:
        procs.stop_all()
        node.destroy()
