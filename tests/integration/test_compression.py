"""Compressed updates through the real broker with real processes: each method trains a short
FedBuff job whose updates arrive the expected factor smaller at reasonable accuracy, and a
malformed or mismatched compressed update is dead-lettered with its reason, changing nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common import models, wire
from common.amqp import Broker
from common.compression import Compression, compress
from common.messages import TrainTask, WeightUpdate, new_id
from common.topology import Topology
from tests.integration.conftest import cleanup_job
from tests.integration.support import AMQP_URL, Processes, fetch_model, read_summary, wait_for

pytestmark = pytest.mark.integration
UPDATES = 12
SPECS = {"float16": Compression("float16"), "int8": Compression("int8"),
         "topk": Compression("topk", 0.1)}
SHRINK = {"float16": 1.9, "int8": 3.6, "topk": 4.3}  # at least, for the digits model's updates


def reference_body(spec: Compression) -> int:
    """The size of a worker's update of the digits model sent with `spec` (training metrics as
    Keras reports them; worker ids as in the test)."""
    weights = [np.asarray(w) for w in models.build("digits_mlp", 0).get_weights()]
    sent = compress(weights, spec)
    update = WeightUpdate(update_id=new_id(), worker_id="worker-0", task_id=new_id(),
                          base_version=3, num_examples=500, train_seconds=0.25,
                          weights=sent.values, is_delta=True, scales=sent.scales,
                          indices=sent.indices, compression=spec.method,
                          metrics={"loss": 0.5, "accuracy": 0.9})
    return len(wire.encode(update))


def test_each_compression_trains_a_job_with_updates_the_expected_factor_smaller(
        procs: Processes, tmp_path: Path) -> None:
    # Given one FedBuff job per method, side by side (a coordinator whose tasks ask for it,
    # and one worker holding the whole training split)
    jobs = {method: Topology(job=f"t{uuid.uuid4().hex[:10]}") for method in SPECS}
    coordinators = {}
    try:
        for method, topology in jobs.items():
            spec, out = SPECS[method], tmp_path / method
            procs.start("worker", f"worker-{method}", job=topology.job, worker_id="worker-0",
                        shard_index=0, num_shards=1)
            coordinators[method] = procs.start(
                "coordinator", f"coordinator-{method}", job=topology.job, strategy="fedbuff",
                buffer_size=2, max_updates=UPDATES, concurrency=2, wait_for_workers=1,
                out=out, compression=method, topk_fraction=spec.topk_fraction or 0.01)
        # When the jobs run to their end
        for coordinator in coordinators.values():
            assert procs.wait(coordinator, 600) == 0, procs.logs()
    finally:
        procs.stop_all()
        for topology in jobs.values():
            cleanup_job(AMQP_URL, topology)
    plain = reference_body(Compression())
    for method, spec in SPECS.items():
        summary = read_summary(tmp_path / method)
        # Then every update was applied, none refused
        assert summary["updates_applied"] == UPDATES, (method, summary)
        assert summary["updates_rejected"] == 0 and summary["compression"] == method, summary
        # And each update arrived the size of its compressed form: the expected factor smaller
        per_update = summary["bytes_per_update"]
        assert per_update == pytest.approx(reference_body(spec), rel=0.02), (method, summary)
        assert plain / per_update >= SHRINK[method], (method, plain, per_update)
        # And the model learned (measured: about 0.95 at 4 to 6 updates)
        assert summary["final_accuracy"] >= 0.85, (method, summary)


# ---------------------------------------------------------------- refusals on the real broker

@pytest.fixture(scope="module")
def topk_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Topology,
                                                                         list[TrainTask]]]:
    """A top-k (10 %) FedBuff coordinator with no workers, and its tasks taken off the queue."""
    topology = Topology(job=f"t{uuid.uuid4().hex[:10]}")
    workdir = tmp_path_factory.mktemp("compression")
    procs = Processes(workdir, {"FEDMQ_AMQP_URL": AMQP_URL, "FEDMQ_JOB": topology.job})
    broker = Broker(AMQP_URL, name="fedmq-test-compression")
    broker.declare(topology)
    procs.start("coordinator", strategy="fedbuff", buffer_size=1, max_updates=100,
                concurrency=len(BAD), compression="topk", topk_fraction=0.1,
                out=workdir / "out")
    tasks: list[TrainTask] = []

    def take_tasks() -> bool:
        while (delivery := broker.get(topology.tasks)) is not None:
            broker.ack(delivery)
            tasks.append(wire.decode(delivery.body, TrainTask))
        return len(tasks) >= len(BAD)

    try:
        wait_for(take_tasks, 60, "the coordinator's tasks")
        yield broker, topology, tasks
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            broker.close()
        cleanup_job(AMQP_URL, topology)


def duplicated(update: WeightUpdate) -> WeightUpdate:
    index = np.array(update.indices[0])
    index[1] = index[0]
    return dataclasses.replace(update, indices=(index, *update.indices[1:]))


def out_of_range(update: WeightUpdate) -> WeightUpdate:
    index = np.array(update.indices[0])
    index[-1] = 4096
    return dataclasses.replace(update, indices=(index, *update.indices[1:]))


def one_short(update: WeightUpdate) -> WeightUpdate:
    return dataclasses.replace(update, weights=(update.weights[0][:-1], *update.weights[1:]),
                               indices=(update.indices[0][:-1], *update.indices[1:]))


def as_int8(update: WeightUpdate) -> WeightUpdate:
    sent = compress([np.full(np.shape(w), 0.01, np.float32) for w in MODEL_SHAPES],
                    Compression("int8"))
    return dataclasses.replace(update, weights=sent.values, scales=sent.scales, indices=(),
                               compression="int8")


MODEL_SHAPES = [np.zeros(s) for s in [(64, 64), (64,), (64, 10), (10,)]]
BAD = {"duplicate indices": (duplicated, "bad_compression: array 0: indices are not strictly"),
       "index out of range": (out_of_range, "index 4096 is out of range"),
       "wrong count": (one_short, "indices have shape (409,), expected (410,)"),
       "int8 to a top-k job": (as_int8, "compression_mismatch")}


def test_malformed_compressed_updates_are_dead_lettered_with_their_reason(
        topk_job: tuple[Broker, Topology, list[TrainTask]]) -> None:
    broker, topology, tasks = topk_job
    before = fetch_model(broker, topology)
    valid = compress([np.full(w.shape, 0.01, np.float32) for w in before.weights],
                     Compression("topk", 0.1))
    for (name, (spoil, reason)), task in zip(BAD.items(), tasks, strict=False):
        # Given a top-k update answering a real task, spoilt one way
        update = spoil(WeightUpdate(
            update_id=new_id(), worker_id=f"w-{name}", task_id=task.task_id,
            base_version=before.version, num_examples=10, train_seconds=0.1,
            weights=valid.values, indices=valid.indices, is_delta=True, compression="topk"))
        # When it reaches the coordinator
        broker.publish("", topology.updates, wire.encode(update))

        # Then it is dead-lettered with its reason
        def dead() -> object:
            broker.process(0.05)
            delivery = broker.get(topology.dead)
            if delivery is not None:
                broker.ack(delivery)
            return delivery
        letter = wait_for(dead, 20, f"the dead letter of {name}")
        assert reason in str(letter.headers.get("x-fedmq-reason")), (name, letter.headers)
    # And the global model never changed
    after = fetch_model(broker, topology)
    assert after.version == before.version
    assert all(a.tobytes() == b.tobytes() for a, b in zip(after.weights, before.weights,
                                                          strict=True))
