"""The asynchronous pipeline end to end: real broker, real coordinator and worker processes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from common.topology import Topology
from fedmq.management import Management
from tests.integration.support import Processes, read_summary, wait_for

pytestmark = pytest.mark.integration


def consumers(management: Management, queue: str) -> int:
    return int((management.queue(queue) or {}).get("consumers", 0))


def test_small_run_converges_and_is_visible_in_the_management_api(
        procs: Processes, topology: Topology, management: Management, tmp_path: Path) -> None:
    # Given three workers on Dirichlet(0.5) shards of digits and a coordinator
    out = tmp_path / "out"
    for index in range(3):
        procs.start("worker", shard_index=index, num_shards=3, worker_id=f"w{index}")
    coordinator = procs.start("coordinator", max_updates=90, concurrency=3, out=out)

    # When the job runs, then the management API shows one task consumer per worker
    # and exactly one update consumer (the coordinator)
    wait_for(lambda: consumers(management, topology.tasks) == 3, 90, "3 consumers on tasks")
    wait_for(lambda: consumers(management, topology.updates) == 1, 30, "1 consumer on updates")

    # Then the job ends by itself with a converged model and complete results
    assert procs.wait(coordinator, 240) == 0, coordinator.log()
    summary = read_summary(out)
    assert summary["updates_applied"] == 90
    assert summary["updates_rejected"] == 0
    assert summary["workers"] == 3
    assert summary["final_accuracy"] >= 0.85, summary
    assert (out / "final_model.keras").stat().st_size > 0
    assert (out / "accuracy_vs_time.png").stat().st_size > 0
    with (out / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["version"]) for r in rows[1:]] == list(range(1, 91))
    assert all(r["staleness"] != "" for r in rows[1:])


def test_a_worker_that_starts_late_gets_the_current_model(
        procs: Processes, topology: Topology, tmp_path: Path) -> None:
    # Given a coordinator that has already broadcast version 0 to nobody
    out = tmp_path / "out"
    coordinator = procs.start("coordinator", max_updates=6, concurrency=1, out=out)
    wait_for(lambda: "version 0" in coordinator.log(), 60, "coordinator to start")

    # When a worker starts afterwards
    worker = procs.start("worker", shard_index=0, num_shards=1)

    # Then it asks for the current model instead of waiting, and the job completes
    assert procs.wait(coordinator, 120) == 0, worker.log()
    assert read_summary(out)["updates_applied"] == 6
