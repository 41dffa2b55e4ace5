"""A coordinator crash loop that no update causes (here: death right after each checkpoint, before
any ack, as a full disk or a restart policy would repeat it) loses no confirmed update and
dead-letters none (issue 14, item 3).

The crash loop must hold the same valid updates in hand at every death, or it proves nothing: a
coordinator that dies after its second checkpoint never publishes a task (the publish comes after
the checkpoint), so without updates already queued no update would ever be in hand. So the
workers first fill the updates queue while no coordinator runs; every restart then receives that
whole pile (fewer than the prefetch of 16) and dies before acking any of it. With the updates
queue's old delivery limit of 10 the broker dead-lettered the whole pile at the eleventh death."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from common.amqp import Broker
from common.topology import Topology
from fedmq.management import Management
from tests.integration.audit import audit, queues_end_empty, tap_updates, tapped_updates
from tests.integration.support import Processes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SHAPE: dict[str, Any] = {"dataset": "digits", "seed": 5, "num_shards": 3, "partition": "iid"}
JOB: dict[str, Any] = {**SHAPE, "strategy": "fedasync", "max_updates": 40, "concurrency": 10,
                       "drain_seconds": 60, "task_deadline": 30}
DEATHS = 12
SETTLED_SECONDS = 8  # over the management API's 5 s sampling and a task's training
PREFETCH = 16  # the coordinator's prefetch of updates: a pile this size is in hand at once


def test_12_coordinator_deaths_in_a_row_lose_and_dead_letter_no_update(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given a running job (three workers, updates tapped) whose coordinator is then killed
    tap_updates(broker, topology)
    for slot in range(3):
        procs.start("worker", name=f"w{slot}", shard_index=slot, train_delay_seconds=0.5,
                    **SHAPE)
    out = tmp_path / "out"
    settings = {**JOB, "out": out}
    first = procs.start("coordinator", name="first", **settings)
    wait_for(lambda: "version 5 " in first.log(), 240, "the first versions")
    first.process.send_signal(signal.SIGKILL)
    assert procs.wait(first, 30) == -signal.SIGKILL
    # and the workers train every task it had published: valid, confirmed updates pile up in the
    # updates queue with nobody to consume them
    # (the management API's counts are sampled every few seconds and can show an empty tasks
    # queue while workers still train: the pile must also hold still, counted exactly over AMQP,
    # for longer than a sampling interval and a task's training)
    seen = {"depth": -1.0, "since": time.monotonic()}

    def trained() -> bool:
        tasks = management.queue(topology.tasks) or {}
        idle = tasks.get("messages", 1) == 0 and tasks.get("messages_unacknowledged", 1) == 0
        depth = ready(amqp_url, topology.updates)
        if depth != seen["depth"]:
            seen.update(depth=depth, since=time.monotonic())
        return idle and time.monotonic() - seen["since"] > SETTLED_SECONDS

    wait_for(trained, 180, "every queued task trained", every=1.0)
    pile = ready(amqp_url, topology.updates)
    assert 3 <= pile < PREFETCH, pile

    # When the coordinator dies 12 times in a row, each time right after its second checkpoint
    # (the whole pile received and checkpointed, nothing acked), and is restarted each time
    for death in range(DEATHS):
        doomed = procs.start("coordinator", name=f"c{death}",
                             fault_coordinator_crash_after_checkpoint=2, **settings)
        assert procs.wait(doomed, 180) == 137, doomed.log()[-3000:]
        assert "resuming job" in doomed.log(), doomed.log()[-3000:]

    # Then the whole pile is still in the updates queue and nothing is in the dead-letter queue
    queued, dead = ready(amqp_url, topology.updates), ready(amqp_url, topology.dead)
    assert (queued, dead) == (pile, 0), \
        f"after {DEATHS} deaths {queued} of {pile} updates still queued, {dead} dead-lettered"
    # and the job finishes on the next start
    final = procs.start("coordinator", name="final", **settings)
    assert procs.wait(final, 420) == 0, final.log()[-4000:]
    procs.stop_all()
    # with every confirmed update decided exactly once (applied: none rejected), nothing
    # dead-lettered, and the work queues empty
    check = Broker(amqp_url, name="fedmq-test-audit")
    try:
        result = audit(out, tapped_updates(check, topology), JOB)
    finally:
        check.close()
    dead = ready(amqp_url, topology.dead)
    assert dead == 0, f"{dead} updates dead-lettered"
    assert result.summary["resumes"] >= DEATHS + 1 and result.summary["updates_rejected"] == 0
    queues_end_empty(management, topology)


def ready(amqp_url: str, queue: str) -> int:
    """Messages ready in `queue`, on a fresh connection (the fixture's one idles for minutes here,
    unserved, and a loaded machine lets the broker drop it for missed heartbeats)."""
    check = Broker(amqp_url, name="fedmq-test-depth")
    try:
        return check.queue_depth(queue)[0]
    finally:
        check.close()
