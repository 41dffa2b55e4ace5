"""Model traffic grows with tasks, not with workers x versions (shared/DESIGN.md, traffic rule).

A real job with six workers on the real broker; the management API's per-connection byte counts
say what the broker sent each worker. Before version notices, every worker received every
version (about six models per applied update here); now a worker fetches the model a task needs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common import wire
from common.messages import GlobalModel
from common.topology import Topology
from coordinator import checkpoint
from fedmq.management import Management
from tests.integration.support import Processes, read_summary, wait_for

pytestmark = pytest.mark.integration
WORKERS = 6
UPDATES = 150
STATS_INTERVAL = 5.0


def bytes_sent_to(management: Management, names: set[str]) -> int | None:
    """Bytes the broker has sent on the named connections (None until all of them show)."""
    sent = {c["client_properties"].get("connection_name"): c.get("send_oct")
            for c in management.connections()}
    if not names <= set(sent) or any(sent[name] is None for name in names):
        return None
    return sum(int(sent[name]) for name in names)


def test_the_broker_sends_workers_about_one_model_per_applied_update(
        procs: Processes, topology: Topology, management: Management, tmp_path: Path) -> None:
    # Given six workers and a FedAsync coordinator (a new version for every update)
    out = tmp_path / "out"
    ids = [f"{topology.job}-w{index}" for index in range(WORKERS)]
    for index, worker_id in enumerate(ids):
        procs.start("worker", shard_index=index, num_shards=WORKERS, worker_id=worker_id)
    coordinator = procs.start("coordinator", max_updates=UPDATES, concurrency=WORKERS, out=out,
                              drain_seconds=2)

    # When the job runs to its end
    assert procs.wait(coordinator, 300) == 0, coordinator.log()
    summary = read_summary(out)
    assert summary["updates_applied"] == UPDATES and summary["versions"] == UPDATES

    # Then the broker sent the workers (models, tasks, leases, heartbeats: everything) at most
    # 1.2 model sizes plus 1 KB per applied update, where every version to every worker would
    # have been about six
    state = checkpoint.load(checkpoint.path_in(out))
    model_bytes = len(wire.encode(GlobalModel(version=UPDATES, fingerprint="f" * 16,
                                              weights=tuple(state["core"]["weights"]))))
    names = {f"fedmq-worker-{worker_id}" for worker_id in ids}
    ended = time.monotonic()
    # the management API samples connection counters every 5 s (collect_statistics_interval):
    # a reading taken a sampling interval after the job ended holds all of the job's traffic
    total = wait_for(lambda: time.monotonic() - ended > STATS_INTERVAL + 1 and
                     bytes_sent_to(management, names), 30, "worker connection counters")
    per_update = total / UPDATES
    print(f"broker -> workers: {total} bytes, {per_update:.0f} per applied update, "
          f"model {model_bytes} bytes, ratio {per_update / model_bytes:.3f}")
    assert per_update <= 1.2 * model_bytes + 1024, (per_update, model_bytes)
