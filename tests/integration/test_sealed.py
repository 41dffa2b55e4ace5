"""A sealed run on the real broker: what a broker operator sees, and what forged, tampered or
replayed updates achieve (nothing). The tests of this module share one job and run in order:
capture, attack, then let the run finish and check its summary."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from common import identity, sealed_wire, sealing, wire
from common.amqp import Broker, Delivery
from common.errors import DecodeError
from common.messages import (
    GlobalModel,
    ModelNotice,
    ModelRequest,
    TrainTask,
    WeightUpdate,
    new_id,
)
from common.topology import Topology
from fedmq.management import Management
from tests.integration.broker_tools import declare_queue
from tests.integration.conftest import cleanup_job
from tests.integration.support import (
    AMQP_URL,
    MANAGEMENT_URL,
    Processes,
    keys_cli,
    read_summary,
    wait_for,
)

pytestmark = pytest.mark.integration
MAX_UPDATES = 16
CAPTURE = 3
REPLAYS = 100



@dataclass
class SealedJob:
    topology: Topology
    broker: Broker
    procs: Processes
    keys: Path
    out: Path
    captured: list[bytes]
    tap_queue: str
    tasks_seen: list[bytes]
    dead_codes: Counter[str] = field(default_factory=Counter)

    def identity(self, name: str) -> identity.Identity:
        return identity.load_identity(self.keys / f"{name}.key")

    def coordinator(self) -> identity.PublicIdentity:
        return identity.load_public(self.keys / "coordinator.pub")

    def model(self) -> GlobalModel:
        """The current model, asked for and opened as registered worker w0 would."""
        model, _ = sealed_wire.decode_sealed(self.model_body(), GlobalModel,
                                      trusted={"coordinator": self.coordinator().signing},
                                      me=self.identity("w0"))
        return model

    def model_body(self) -> bytes:
        """The current model as the coordinator sends it to whoever asks (sealed)."""
        replies: list[bytes] = []
        tag = self.broker.consume("amq.rabbitmq.reply-to", lambda d: replies.append(d.body),
                                  auto_ack=True)
        self.broker.publish("", self.topology.model_requests,
                            wire.encode(ModelRequest(worker_id="test")),
                            reply_to="amq.rabbitmq.reply-to", correlation_id=new_id(),
                            persistent=False)
        wait_for(lambda: self.broker.process(0.1) or replies, 15, "a model reply")
        self.broker.cancel(tag)
        return replies[0]

    def take_task(self) -> TrainTask:
        def take() -> TrainTask | None:
            delivery = self.broker.get(self.topology.tasks)
            if delivery is None:
                return None
            self.broker.ack(delivery)
            task, _ = sealed_wire.decode_sealed(delivery.body, TrainTask,
                                         trusted={"coordinator": self.coordinator().signing})
            return task
        return wait_for(take, 30, "a signed task")

    def publish(self, body: bytes) -> None:
        self.broker.publish("", self.topology.updates, body)

    def dead_letters(self, count: int, timeout: float = 60) -> list[Delivery]:
        """Take the next `count` dead-lettered updates, counting their codes."""
        taken: list[Delivery] = []

        def enough() -> bool:
            while len(taken) < count and (d := self.broker.get(self.topology.dead)) is not None:
                self.broker.ack(d)
                taken.append(d)
                self.dead_codes[str(d.headers.get("x-fedmq-code"))] += 1
            return len(taken) >= count
        wait_for(enough, timeout, f"{count} dead-lettered updates")
        return taken


def forge(job: SealedJob, signer: identity.Identity, task_id: str, model: GlobalModel,
          worker_id: str | None = None) -> bytes:
    update = WeightUpdate(update_id=new_id(), worker_id=worker_id or signer.name,
                          task_id=task_id, base_version=model.version, num_examples=50,
                          train_seconds=0.1, weights=tuple(np.array(w) + 0.01
                                                           for w in model.weights))
    return sealed_wire.encode_sealed(update, signer, {"coordinator": job.coordinator().encryption})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SealedJob]:
    workdir = tmp_path_factory.mktemp("sealed")
    keys = workdir / "keys"
    for name in ("coordinator", "w0", "w1", "rogue"):
        keys_cli("generate", name, "--dir", str(keys))
    for name in ("w0", "w1"):
        keys_cli("register", str(keys / f"{name}.pub"), "--registry", str(keys / "reg.json"))
    topology = Topology(job=f"t{uuid.uuid4().hex[:10]}")
    procs = Processes(workdir, {"FEDMQ_AMQP_URL": AMQP_URL, "FEDMQ_JOB": topology.job})
    broker = Broker(AMQP_URL, name="fedmq-test-sealed")
    broker.declare(topology)
    tap_queue = f"fedmq.{topology.job}.tap"  # what an operator binds to see every version notice
    declare_queue(broker, tap_queue, bind_to=topology.model, durable=False)
    tap = Broker(AMQP_URL, name="fedmq-test-tap")
    try:
        # The test holds the updates queue (single active consumer) so that the first updates
        # wait for it; it records them and hands them on by closing its connection.
        captured: list[bytes] = []
        tap.consume(topology.updates, lambda d: captured.append(d.body), prefetch=CAPTURE)
        out = workdir / "out"
        procs.start("coordinator", name="coordinator", max_updates=MAX_UPDATES, concurrency=3,
                    out=out, identity=keys / "coordinator.key", registry=keys / "reg.json",
                    drain_seconds=2)
        management = Management(MANAGEMENT_URL)
        tasks = wait_for(lambda: management.get_messages(topology.tasks, count=5), 60,
                         "signed tasks, seen through the management API")
        for name in ("w0", "w1"):
            procs.start("worker", name=name, identity=keys / f"{name}.key",
                        coordinator_key=keys / "coordinator.pub", num_shards=2,
                        shard_index=int(name[1]))
        wait_for(lambda: tap.process(0.2) or len(captured) >= CAPTURE, 120,
                 f"{CAPTURE} sealed updates in transit")
        tap.close()  # unacked: the broker hands them to the coordinator
        yield SealedJob(topology, broker, procs, keys, out, captured, tap_queue,
                        [base64.b64decode(m["payload"]) for m in tasks])
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            tap.close()
        with contextlib.suppress(Exception):
            broker.delete(tap_queue)
        with contextlib.suppress(Exception):
            broker.close()
        cleanup_job(AMQP_URL, topology)


def shows_weights(body: bytes, weights: tuple[np.ndarray, ...]) -> bool:
    """True if the codec decodes `body`, or if any 32-byte run of the weights occurs in it."""
    try:
        wire.decode(body)
        return True
    except DecodeError:
        pass
    for layer in weights:
        raw = layer.tobytes()
        for start in range(0, len(raw) - 32, max(32, len(raw) // 8)):
            if raw[start:start + 32] in body:
                return True
    return False


def test_messages_captured_from_the_broker_contain_no_decodable_weights(job: SealedJob) -> None:
    # Given the sealed updates captured in transit, everything the management API shows and a
    # model as the coordinator sends it to whoever asks
    management = Management(MANAGEMENT_URL)
    notices = [base64.b64decode(m["payload"])
               for m in management.get_messages(job.tap_queue, count=5)]
    models = [job.model_body()]
    tasks = job.tasks_seen
    assert job.captured and notices and tasks

    # Then no update holds decodable weights, though the coordinator's key opens each of them
    coordinator = job.identity("coordinator")
    trusted = {n: job.identity(n).public().signing for n in ("w0", "w1")}
    for body in job.captured:
        update, seal = sealed_wire.decode_sealed(body, WeightUpdate, trusted=trusted,
                                                 me=coordinator)
        assert seal.encrypted and update.worker_id in ("w0", "w1")
        assert not shows_weights(body, update.weights)
        # (the same update unsealed shows its weights: the check can fail)
        assert shows_weights(wire.encode(update), update.weights)

    # And global models open only for registered workers, never for an unregistered key
    for body in models:
        model, _ = sealed_wire.decode_sealed(body, GlobalModel,
                                      trusted={"coordinator": job.coordinator().signing},
                                      me=job.identity("w1"))
        assert not shows_weights(body, model.weights)
        with pytest.raises(sealing.SealError, match="not_a_recipient"):
            sealed_wire.decode_sealed(body, GlobalModel, trusted={"coordinator":
                                                           job.coordinator().signing},
                               me=job.identity("rogue"))

    # And the version notices on the model exchange are small and signed by the coordinator
    for body in notices:
        notice, seal = sealed_wire.decode_sealed(body, ModelNotice,
                                          trusted={"coordinator": job.coordinator().signing})
        assert seal.signer == "coordinator" and notice.version >= 0 and len(body) < 1024

    # And tasks carry no weights, and are signed by the coordinator
    for body in tasks:
        task, seal = sealed_wire.decode_sealed(body, TrainTask,
                                        trusted={"coordinator": job.coordinator().signing})
        assert seal.signer == "coordinator" and not seal.encrypted and task.task_id


def test_workers_stop_and_the_coordinator_waits(job: SealedJob) -> None:
    # Given the captured updates were handed on and applied
    wait_for(lambda: job.model().version >= CAPTURE, 60, "captured updates applied")
    # When the registered workers stop, then the coordinator keeps its model and serves on
    for proc in job.procs.started[1:]:
        proc.process.terminate()
    for proc in job.procs.started[1:]:
        job.procs.wait(proc, 60)
    assert job.procs.started[0].alive()


def test_tampering_with_one_byte_of_a_sealed_update_gets_it_rejected(job: SealedJob) -> None:
    # Given an authentic sealed update and the positions of its header, ciphertext and seal
    body = job.captured[0]
    envelope = wire.unpack_envelope(body)
    at_payload = body.find(envelope.payload)
    at_signature = body.find(envelope.extra["seal"]["sig"])
    at_task = body.find(envelope.header["task_id"].encode())
    before = job.model()

    # When one byte is flipped in each place and the result is published
    for position in (at_task + 3, at_payload, at_payload + len(envelope.payload) // 2,
                     at_payload + len(envelope.payload) - 1, at_signature + 10):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        job.publish(bytes(tampered))

    # Then every one is rejected for its signature, and the model did not change
    dead = job.dead_letters(5)
    assert [d.headers["x-fedmq-code"] for d in dead] == ["bad_signature"] * 5
    assert job.model().version == before.version


def test_replaying_an_accepted_update_100_times_applies_it_0_more_times(job: SealedJob) -> None:
    # Given an update the coordinator has already applied, and a signed one it will reject
    before = job.model()
    rejected = forge(job, job.identity("w0"), new_id(), before)

    # When a broker operator publishes the applied one again 100 times, then the rejected one
    # twice
    for _ in range(REPLAYS):
        job.publish(job.captured[1])
    job.publish(rejected)
    job.publish(rejected)

    # Then the 100 are duplicates of an accepted update (acked and counted, as a redelivery
    # after a crash is: issue 14, item 7), the rejected one's second copy is a replay, and the
    # version and weights stay as they were
    dead = job.dead_letters(2)
    assert [d.headers["x-fedmq-code"] for d in dead] == ["unknown_task", "replayed"]
    after = job.model()
    assert after.version == before.version
    for old, new in zip(before.weights, after.weights, strict=True):
        assert old.tobytes() == new.tobytes()


def test_an_update_for_a_task_that_went_to_another_worker_is_rejected(job: SealedJob) -> None:
    # Given a task that w0 answered, and one that was never issued at all
    model = job.model()
    owners = {}
    for body in job.captured:
        header = wire.unpack_envelope(body).header
        owners[header["worker_id"]] = header["task_id"]
    worker, task_id = next(iter(owners.items()))
    other = "w1" if worker == "w0" else "w0"

    # When the other registered worker sends updates for them
    job.publish(forge(job, job.identity(other), task_id, model))
    job.publish(forge(job, job.identity(other), new_id(), model))

    # Then both are rejected with their reasons and nothing is applied
    dead = job.dead_letters(2)
    assert [d.headers["x-fedmq-code"] for d in dead] == ["task_not_issued_to_worker",
                                                         "unknown_task"]
    assert job.model().version == model.version


def test_an_unregistered_worker_gets_nothing_and_its_updates_are_rejected(
        job: SealedJob) -> None:
    # Given an unregistered worker process with its own key
    rogue = job.procs.start("worker", name="rogue", identity=job.keys / "rogue.key",
                            coordinator_key=job.keys / "coordinator.pub", num_shards=2,
                            shard_index=0)
    wait_for(lambda: "not_a_recipient" in rogue.log(), 60, "the rogue to be refused the model")
    model = job.model()

    # When it forges updates for real tasks: under its own name, and claiming to be w0
    rogue_key = job.identity("rogue")
    for _ in range(4):
        job.publish(forge(job, rogue_key, job.take_task().task_id, model))
    impostor = replace(rogue_key, name="w0")
    job.publish(forge(job, impostor, job.take_task().task_id, model))

    # Then each is rejected, and none is applied
    dead = job.dead_letters(5)
    assert [d.headers["x-fedmq-code"] for d in dead] == ["unknown_worker"] * 4 + \
        ["bad_signature"]
    assert job.model().version == model.version
    assert " done (" not in rogue.log()


def test_the_run_still_completes_with_every_rejection_counted(job: SealedJob) -> None:
    # When the registered workers come back
    for name in ("w0", "w1"):
        job.procs.start("worker", name=f"{name}-again", identity=job.keys / f"{name}.key",
                        coordinator_key=job.keys / "coordinator.pub", num_shards=2,
                        shard_index=int(name[1]))

    # Then the coordinator reaches its target and counts every rejection by its reason
    assert job.procs.wait(job.procs.started[0], 180) == 0, job.procs.logs()
    summary = read_summary(job.out)
    assert summary["sealed"] is True
    assert summary["updates_applied"] == MAX_UPDATES
    assert summary["worker_ids"] == ["w0", "w1"]
    assert summary["rejected_by_reason"] == dict(job.dead_codes), job.dead_codes
    assert summary["rejected_by_reason"] == {"bad_signature": 6, "replayed": 1,
                                             "task_not_issued_to_worker": 1, "unknown_task": 2,
                                             "unknown_worker": 4}
    assert summary["duplicates"] >= REPLAYS


def test_fedmq_run_sealed_makes_keys_and_completes(procs: Processes, tmp_path: Path) -> None:
    # When the local demo runs with --sealed (FEDMQ_SEALED, as the flag sets it)
    out = tmp_path / "out"
    run = procs.start("run", workers=2, max_updates=10, out=out, sealed=True,
                      wait_for_workers=2)  # both in the job: 10 updates can go to the first
    assert procs.wait(run, 180) == 0, run.log()

    # Then it made an identity per process, registered the workers, and ran sealed
    summary = read_summary(out)
    assert summary["sealed"] is True and summary["updates_applied"] == 10
    assert summary["updates_rejected"] == 0
    registry = identity.Registry.load(out / "keys" / "registry.json")
    assert sorted(registry.workers) == ["worker-0", "worker-1"] == summary["worker_ids"]
