"""Bad updates sent through the real broker are rejected with a reason, dead-lettered, and change
nothing: the global model stays as it was and the coordinator keeps serving."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import numpy as np
import pytest

from common import wire
from common.amqp import Broker, Delivery
from common.messages import GlobalModel, TrainTask, WeightUpdate, new_id
from common.topology import Topology
from tests.integration.conftest import cleanup_job
from tests.integration.support import AMQP_URL, Processes, fetch_model, wait_for

pytestmark = pytest.mark.integration
MAX_BYTES = 256 * 1024


@dataclass
class Job:
    topology: Topology
    broker: Broker
    task: TrainTask
    procs: Processes

    def model(self) -> GlobalModel:
        return fetch_model(self.broker, self.topology)

    def update(self, model: GlobalModel, **changes: object) -> WeightUpdate:
        valid = WeightUpdate(update_id=new_id(), worker_id="test", task_id=self.task.task_id,
                             base_version=model.version, num_examples=10, train_seconds=0.1,
                             weights=tuple(np.array(w) + 0.01 for w in model.weights))
        return replace(valid, **changes)  # type: ignore[arg-type]

    def dead_letter(self, timeout: float = 20) -> Delivery:
        def take() -> Delivery | None:
            self.broker.process(0.05)
            delivery = self.broker.get(self.topology.dead)
            if delivery is not None:
                self.broker.ack(delivery)
            return delivery
        return wait_for(take, timeout, "a dead-lettered update")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    topology = Topology(job=f"t{uuid.uuid4().hex[:10]}")
    workdir = tmp_path_factory.mktemp("rejections")
    procs = Processes(workdir, {"FEDMQ_AMQP_URL": AMQP_URL, "FEDMQ_JOB": topology.job})
    broker = Broker(AMQP_URL, name="fedmq-test-rejections")
    broker.declare(topology)
    procs.start("coordinator", max_updates=1000, concurrency=1, out=workdir / "out",
                max_message_bytes=MAX_BYTES)

    def take_task() -> TrainTask | None:
        delivery = broker.get(topology.tasks)
        if delivery is None:
            return None
        broker.ack(delivery)
        return wire.decode(delivery.body, TrainTask)

    try:
        yield Job(topology, broker, wait_for(take_task, 60, "the coordinator's first task"), procs)
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            broker.close()
        cleanup_job(AMQP_URL, topology)


def envelope_with(update: WeightUpdate, **outer: object) -> bytes:
    envelope = wire.to_envelope(update)
    body = {"schema": envelope.schema, "kind": envelope.kind, "header": envelope.header,
            "payload": envelope.payload} | outer
    return msgpack.packb(body, use_bin_type=True)


def shapes_swapped(update: WeightUpdate) -> bytes:
    return wire.encode(replace(update, weights=tuple(w.T for w in update.weights)))


def as_float64(update: WeightUpdate) -> bytes:
    return wire.encode(replace(update, weights=tuple(w.astype(np.float64)
                                                    for w in update.weights)))


def poisoned(value: float) -> Callable[[WeightUpdate], bytes]:
    def build(update: WeightUpdate) -> bytes:
        first = np.array(update.weights[0])
        first[0, 0] = value
        return wire.encode(replace(update, weights=(first, *update.weights[1:])))
    return build


BAD_BODIES: dict[str, tuple[Callable[[WeightUpdate], bytes], str]] = {
    "not msgpack": (lambda u: b"\xc1\x00 definitely not msgpack", "not valid msgpack"),
    "truncated": (lambda u: wire.encode(u)[:-100], "not valid msgpack"),
    "oversized": (lambda u: b"\x00" * (MAX_BYTES + 1), "exceeds the limit"),
    "unknown schema": (lambda u: envelope_with(u, schema=99), "unknown schema"),
    "unknown kind": (lambda u: envelope_with(u, kind="weight_upgrade"), "unknown message kind"),
    "wrong shapes": (shapes_swapped, "shape_mismatch"),
    "wrong dtype": (as_float64, "dtype_mismatch"),
    "NaN": (poisoned(float("nan")), "non_finite"),
    "Inf": (poisoned(float("inf")), "non_finite"),
    "future base version": (lambda u: wire.encode(replace(u, base_version=u.base_version + 5)),
                            "future_version"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_update_is_dead_lettered_with_its_reason_and_changes_nothing(job: Job,
                                                                        case: str) -> None:
    # Given the coordinator's current model
    before = job.model()
    build, reason = BAD_BODIES[case]

    # When a bad update arrives on the updates queue
    job.broker.publish("", job.topology.updates, build(job.update(before)))

    # Then it lands in the dead-letter queue with its reason
    dead = job.dead_letter()
    assert reason in str(dead.headers.get("x-fedmq-reason")), dead.headers
    assert dead.headers.get("x-fedmq-queue") == job.topology.updates

    # And the global model is unchanged and the coordinator still answers
    after = job.model()
    assert after.version == before.version
    for old, new in zip(before.weights, after.weights, strict=True):
        assert old.tobytes() == new.tobytes()


def test_coordinator_still_applies_a_valid_update_after_the_bad_ones(job: Job) -> None:
    # Given the model after every bad update was rejected
    before = job.model()

    # When a valid update arrives
    job.broker.publish("", job.topology.updates, wire.encode(job.update(before)))

    # Then it is applied: a new version exists and nothing was dead-lettered
    wait_for(lambda: job.model().version == before.version + 1, 20, "the valid update applied")
    assert job.broker.get(job.topology.dead) is None
    assert all(proc.alive() for proc in job.procs.started)


def test_rejections_are_counted_in_the_summary(job: Job, tmp_path: Path) -> None:
    # When the coordinator is stopped, then its summary counts every rejection by reason
    coordinator = job.procs.started[0]
    job.procs.stop_all()
    assert coordinator.process.returncode == 0, coordinator.log()
    summary = __import__("json").loads((coordinator.log_path.parent / "out" /
                                        "summary.json").read_text())
    assert summary["updates_rejected"] == len(BAD_BODIES)
    assert summary["rejected_by_reason"] == {"decode_error": 5, "shape_mismatch": 1,
                                             "dtype_mismatch": 1, "non_finite": 2,
                                             "future_version": 1}
    assert summary["updates_applied"] == 1
