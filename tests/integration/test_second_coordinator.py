"""A second coordinator for a running job (another machine, another --out) must not touch it: no
purge, no refill of the shard leases; it refuses with one message (issue 14, item 4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.audit import audit, queues_end_empty, tap_updates, tapped_updates
from tests.integration.support import Processes, wait_for

pytestmark = pytest.mark.integration
JOB = {"dataset": "digits", "seed": 3, "num_shards": 2, "partition": "iid",
       "strategy": "fedasync", "max_updates": 80, "concurrency": 2, "drain_seconds": 30}
LEASED = re.compile(r"leased shard (\d+)/")
JOB_IN_USE = 4  # the exit code of a coordinator refused because the job has one already


def test_a_second_coordinator_with_another_out_refuses_and_the_job_goes_on(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given a running job: a coordinator and two identical (leasing) workers, updates tapped
    tap_updates(broker, topology)
    workers = [procs.start("worker", name=f"w{i}", train_delay_seconds=0.6,
                           **{k: JOB[k] for k in ("dataset", "seed", "num_shards", "partition")})
               for i in range(2)]
    first_out = tmp_path / "first"
    first = procs.start("coordinator", name="first", out=first_out, **JOB)
    wait_for(lambda: all(LEASED.search(w.log()) for w in workers), 180, "both leases")
    wait_for(lambda: "version 5 " in first.log() or "version 10 " in first.log(), 180,
             "the first versions")

    # When a second coordinator for the same job starts with another --out
    second = procs.start("coordinator", name="second", out=tmp_path / "second", heartbeat=2,
                         **JOB)

    # Then it refuses with one clear message, having purged and refilled nothing
    code = procs.wait(second, 120)
    log = second.log()
    assert code == JOB_IN_USE, log[-3000:]
    assert "already has a coordinator" in log and "Traceback" not in log, log[-3000:]
    assert "purged" not in log and "shard leases" not in log, log[-3000:]
    # and the first job ends normally: no worker lost its lease, every update decided once
    assert procs.wait(first, 300) == 0, first.log()[-3000:]
    assert all(len(LEASED.findall(w.log())) == 1 for w in workers), procs.logs()
    procs.stop_all()
    settings = {k: v for k, v in JOB.items()}
    check = Broker(amqp_url, name="fedmq-test-audit")
    try:
        result = audit(first_out, tapped_updates(check, topology), settings)
    finally:
        check.close()
    assert result.summary["updates_applied"] >= JOB["max_updates"]
    queues_end_empty(management, topology)
