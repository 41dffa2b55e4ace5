"""What a worker refuses, on the real broker (issue 14, items 6 and 8): a coordinator model of
another architecture (it stops at start and gives its shard lease back), tasks not signed by the
coordinator (sealed mode), and updates past its own epsilon budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common import identity, sealed_wire, wire
from common.amqp import Broker
from common.messages import TrainTask, new_id
from common.topology import Topology
from coordinator import checkpoint
from tests.integration.support import Processes, keys_cli, read_summary, wait_for

pytestmark = pytest.mark.integration
NARROW = "tests.integration.other_models:narrow_digits_mlp"


def test_a_worker_with_another_architecture_stops_at_start_and_releases_its_lease(
        procs: Processes, tmp_path: Path) -> None:
    # Given a digits job with one shard lease, and a worker started with another model
    out = tmp_path / "out"
    coordinator = procs.start("coordinator", dataset="digits", num_shards=1, max_updates=3,
                              concurrency=1, out=out, drain_seconds=2)
    wrong = procs.start("worker", name="wrong", dataset="digits", num_shards=1, model=NARROW)

    # When it receives the coordinator's model
    # Then it stops at once with one clear error naming both architectures and exits non-zero
    assert procs.wait(wrong, 120) != 0, wrong.log()[-3000:]
    log = wrong.log()
    assert "Error: the coordinator's model (version 0) has architecture" in log, log[-3000:]
    assert NARROW in log and "(64, 16)" in log and "(64, 64)" in log
    assert "leased shard 0/1" in log
    # and its lease went back: a right worker takes the one shard and the job ends normally
    right = procs.start("worker", name="right", dataset="digits", num_shards=1)
    wait_for(lambda: "leased shard 0/1" in right.log(), 120, "the lease to be taken again")
    assert procs.wait(coordinator, 180) == 0, coordinator.log()[-3000:]
    assert read_summary(out)["updates_applied"] == 3



def test_a_sealed_worker_refuses_forged_and_unsigned_tasks_and_never_trains_on_them(
        procs: Processes, broker: Broker, topology: Topology, tmp_path: Path) -> None:
    # Given a sealed job (coordinator, registered worker w0) whose first task is on the queue
    keys = tmp_path / "keys"
    for name in ("coordinator", "w0", "rogue"):
        keys_cli("generate", name, "--dir", str(keys))
    keys_cli("register", str(keys / "w0.pub"), "--registry", str(keys / "reg.json"))
    out = tmp_path / "out"
    coordinator = procs.start("coordinator", dataset="digits", max_updates=2, concurrency=1,
                              out=out, identity=keys / "coordinator.key",
                              registry=keys / "reg.json", drain_seconds=2)
    wait_for(lambda: broker.queue_depth(topology.tasks)[0] >= 1, 60, "the first task")

    # When a task signed by another key under the coordinator's name and an unsigned one are
    # put on the tasks queue, and then the worker starts
    def task(prefix: str) -> TrainTask:
        return TrainTask(task_id=f"{prefix}-{new_id()}", job=topology.job, min_version=0,
                         local_epochs=1, batch_size=16, learning_rate=0.1)
    impostor = replace(identity.load_identity(keys / "rogue.key"), name="coordinator")
    forged, unsigned = task("forged"), task("unsigned")
    broker.publish("", topology.tasks, sealed_wire.encode_sealed(forged, impostor))
    broker.publish("", topology.tasks, wire.encode(unsigned))
    worker = procs.start("worker", name="w0", dataset="digits", identity=keys / "w0.key",
                         coordinator_key=keys / "coordinator.pub", shard_index=0, num_shards=1)

    # Then the job ends normally on the real tasks
    assert procs.wait(coordinator, 180) == 0, coordinator.log()[-3000:]
    assert read_summary(out)["updates_applied"] == 2
    # and the worker refused both (dead-lettered them) and trained on neither
    log = worker.log()
    assert log.count("dead-lettering task that cannot be opened") == 2, log[-3000:]
    assert forged.task_id[:8] not in log and unsigned.task_id[:8] not in log
    dead = []
    while (delivery := broker.get(topology.dead)) is not None:
        broker.ack(delivery)
        dead.append(wire.unpack_envelope(delivery.body).header.get("task_id"))
    assert sorted(dead) == sorted([forged.task_id, unsigned.task_id])


def test_a_worker_stops_before_its_own_epsilon_budget_is_exceeded(
        procs: Processes, tmp_path: Path) -> None:
    # Given a job with local DP (clip 1, noise multiplier 4) and no budget of its own, and a
    # worker with an epsilon budget of 5 at delta 1e-5 (eps(4) = 4.73 <= 5 < eps(5) = 5.38)
    out = tmp_path / "out"
    procs.start("coordinator", dataset="digits", max_updates=20, concurrency=1, out=out,
                dp_clip_norm=1.0, dp_noise_multiplier=4.0, drain_seconds=2)
    worker = procs.start("worker", name="budgeted", worker_id="budgeted", dataset="digits",
                         shard_index=0, num_shards=1, dp_epsilon_budget=5.0, dp_delta=1e-5)

    # When it has sent 4 updates, then it refuses the 5th task and stops by itself
    assert procs.wait(worker, 180) == 0, worker.log()[-3000:]
    log = worker.log()
    assert "privacy budget: update 5 would bring epsilon to 5.378 > budget 5.0" in log, log[-3000:]
    assert "stopped after 4 tasks" in log
    # and the coordinator received exactly 4 updates from it: nothing past the budget was sent
    procs.stop_all()
    releases = checkpoint.load(checkpoint.path_in(out))["intake"]["releases"]
    assert releases == {"budgeted": 4}
