"""A coordinator crash loop that no update causes (here: death right after each checkpoint, before
any ack, as a full disk or a restart policy would repeat it) loses no confirmed update and
dead-letters none (issue 14, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.audit import audit, queues_end_empty, tap_updates, tapped_updates
from tests.integration.support import Processes

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SHAPE: dict[str, Any] = {"dataset": "digits", "seed": 5, "num_shards": 3, "partition": "iid"}
JOB: dict[str, Any] = {**SHAPE, "strategy": "fedasync", "max_updates": 60, "concurrency": 3,
                       "drain_seconds": 60, "task_deadline": 30}
DEATHS = 12


def test_12_coordinator_deaths_in_a_row_lose_and_dead_letter_no_update(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given three workers whose updates are tapped, and a coordinator directory
    tap_updates(broker, topology)
    for slot in range(3):
        procs.start("worker", name=f"w{slot}", shard_index=slot, train_delay_seconds=0.2, **SHAPE)
    out = tmp_path / "out"
    settings = {**JOB, "out": out}

    # When the coordinator dies 12 times in a row, each time right after its second checkpoint
    # (updates applied and checkpointed, none acked), and is restarted each time
    for death in range(DEATHS):
        doomed = procs.start("coordinator", name=f"c{death}",
                             fault_coordinator_crash_after_checkpoint=2, **settings)
        assert procs.wait(doomed, 180) == 137, doomed.log()[-3000:]

    # Then the job finishes on the next start
    final = procs.start("coordinator", name="final", **settings)
    assert procs.wait(final, 420) == 0, final.log()[-4000:]
    procs.stop_all()
    # with every confirmed update decided exactly once, and nothing in the dead-letter queue
    check = Broker(amqp_url, name="fedmq-test-audit")
    try:
        result = audit(out, tapped_updates(check, topology), JOB)
        dead = check.queue_depth(topology.dead)[0]
    finally:
        check.close()
    assert dead == 0, f"{dead} updates dead-lettered"
    assert result.summary["resumes"] >= DEATHS - 1 and result.summary["updates_rejected"] == 0
    queues_end_empty(management, topology)
