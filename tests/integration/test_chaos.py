"""Chaos tests: kill anything, lose nothing, apply nothing twice (issue 4, docs/reliability.md).

Real broker, real processes. Every scenario taps the updates the broker confirmed to workers and
ends with the ledger audit of tests/integration/audit.py (every confirmed update decided, none
applied twice, versions only increasing, the final model equal to a replay of the applied
updates), a final accuracy at most one point below an undisturbed run of the same job, and empty
queues. Run them alone with `python -m pytest -m chaos`.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common import models, wire
from common.amqp import Broker
from common.errors import FedmqError
from common.messages import ModelRequest, TrainTask, WeightUpdate, new_id
from common.topology import Topology
from coordinator import checkpoint
from fedmq.management import Management
from tests.integration.audit import (
    Audit,
    audit,
    queues_end_empty,
    tap_name,
    tap_updates,
    tapped_updates,
)
from tests.integration.conftest import cleanup_job
from tests.integration.private_node import PrivateNode
from tests.integration.support import Proc, Processes, read_summary, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SEED = 7
WORKERS = 4
# IID shards: with Dirichlet shards FedAsync's model swings by about a point from one version to
# the next (the last worker's shard pulls it), which would make the one-point comparison with the
# undisturbed run a coin toss; with IID shards the final accuracy of a run is a stable number.
SHAPE: dict[str, Any] = {"dataset": "digits", "seed": SEED, "num_shards": WORKERS,
                         "partition": "iid"}
JOB: dict[str, Any] = {**SHAPE, "strategy": "fedasync", "max_updates": 200,
                       "concurrency": WORKERS, "eval_every": 10, "drain_seconds": 60}
ACCURACY_SLACK = 0.01
RUN_TIMEOUT = 420
# How a second answer to a task already answered is refused (job_finished: it came after the
# drain); a task is trained twice when its worker lost its connection between the confirm of
# its update and its ack of the task
SECOND_ANSWER = ("task_already_answered", "task_not_issued_to_worker", "job_finished")


@pytest.fixture(autouse=True)
def drop_tap(amqp_url: str, topology: Topology) -> Iterator[None]:
    yield
    broker = Broker(amqp_url, name="fedmq-test-cleanup")
    with contextlib.suppress(FedmqError):
        broker.delete(tap_name(topology))
    broker.close()


@pytest.fixture(scope="module")
def undisturbed(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> float:
    """final_accuracy of the same job with nothing going wrong."""
    topology = Topology(job=f"t{uuid.uuid4().hex[:10]}")
    workdir = tmp_path_factory.mktemp("undisturbed")
    procs = Processes(workdir, {"FEDMQ_AMQP_URL": amqp_url, "FEDMQ_JOB": topology.job})
    try:
        for slot in range(WORKERS):
            start_worker(procs, slot, 0)
        coordinator = procs.start("coordinator", out=workdir / "out",
                                  wait_for_workers=WORKERS, **JOB)
        assert procs.wait(coordinator, RUN_TIMEOUT) == 0, procs.logs()
    finally:
        procs.stop_all()
        cleanup_job(amqp_url, topology)
    return float(read_summary(workdir / "out")["final_accuracy"])


def start_worker(procs: Processes, slot: int, generation: int, **extra: Any) -> Proc:
    return procs.start("worker", name=f"w{slot}-{generation}", shard_index=slot, **SHAPE,
                       **extra)


def tapped_workers(procs: Processes, broker: Broker, topology: Topology, tmp_path: Path) -> Path:
    """Tap the job's updates and start its 4 workers; returns the coordinator's --out."""
    tap_updates(broker, topology)
    for slot in range(WORKERS):
        start_worker(procs, slot, 0, train_delay_seconds=0.1)
    return tmp_path / "out"


def dead_letters(url: str, topology: Topology) -> list[tuple[str, str, str]]:
    """(kind, x-fedmq-code, task id) of every message in the job's dead-letter queue (read
    unacked: they go back to the queue when the connection closes)."""
    fresh = Broker(url, name="fedmq-test-dead")
    try:
        found = []
        for delivery in iter(lambda: fresh.get(topology.dead), None):
            envelope = wire.unpack_envelope(delivery.body)
            found.append((envelope.kind, str(delivery.headers.get("x-fedmq-code", "")),
                          str(envelope.header.get("task_id", ""))))
        return found
    finally:
        fresh.close()


def checkpoint_version(out: Path) -> int:
    path = checkpoint.path_in(out)
    return int(checkpoint.load(path)["core"]["version"]) if path.exists() else -1


def tapped(url: str, topology: Topology) -> dict[str, WeightUpdate]:
    """The tapped updates, on a new connection (the test's own may have idled out)."""
    broker = Broker(url, name="fedmq-test-audit")
    try:
        return tapped_updates(broker, topology)
    finally:
        broker.close()


def trajectory(out: Path) -> str:
    """What a low final accuracy needs explained: the evaluated versions, the staleness of the
    applied updates and how many each worker made (from the run's history.csv)."""
    with (out / "history.csv").open() as lines:
        rows = list(csv.DictReader(lines))
    scores = [f"{row['version']}:{float(row['accuracy']):.4f}" for row in rows if row["accuracy"]]
    applied = [row for row in rows if row["staleness"]]
    staleness = Counter(int(row["staleness"]) for row in applied)
    per_worker = Counter(row["worker_id"] for row in applied)
    return (f"accuracy by version {' '.join(scores)}\nstaleness {sorted(staleness.items())}"
            f"\nupdates per worker {dict(per_worker)}")


def finish_and_audit(procs: Processes, coordinator: Proc, url: str, topology: Topology,
                     management: Management, out: Path, undisturbed: float,
                     settings: dict[str, Any]) -> Audit:
    """Wait for the end; stop the workers; audit the ledger, accuracy and queues."""
    assert procs.wait(coordinator, RUN_TIMEOUT) == 0, coordinator.log()[-4000:]
    procs.stop_all()
    result = audit(out, tapped(url, topology), {k: v for k, v in settings.items() if k != "out"})
    summary = result.summary
    assert summary["final_accuracy"] >= undisturbed - ACCURACY_SLACK, \
        f"{summary['final_accuracy']:.4f} vs undisturbed {undisturbed:.4f}\n{trajectory(out)}"
    assert summary["updates_applied"] == len(result.applied) == summary["versions"]
    queues_end_empty(management, topology)
    return result


# ---------------------------------------------------------------- 1. workers die


def test_kill_9_a_random_worker_20_times_and_a_poison_task_is_dead_lettered(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, undisturbed: float, amqp_url: str) -> None:
    # Given a 200-update run of 4 workers (each task about half a second) whose workers crash
    # on a poison task, and the updates they send tapped
    tap_updates(broker, topology)
    out = tmp_path / "out"
    poison: dict[str, Any] = {"fault_worker_crash_on_task": "poison-", "train_delay_seconds": 0.3}
    slots = {slot: start_worker(procs, slot, 0, **poison) for slot in range(WORKERS)}
    settings = {**JOB, "out": out}
    coordinator = procs.start("coordinator", wait_for_workers=WORKERS, **settings)
    wait_for(lambda: checkpoint_version(out) >= 5, 120, "the first versions")
    poison_task = TrainTask(task_id=f"poison-{new_id()}", job=topology.job, min_version=0,
                            local_epochs=1, batch_size=16, learning_rate=0.1)
    broker.publish("", topology.tasks, wire.encode(poison_task))

    # When a random worker is killed with SIGKILL 20 times (and every dead worker restarted)
    rng, kills, generation = random.Random(SEED), 0, 0

    def restart_the_dead() -> None:
        nonlocal generation
        for slot, proc in slots.items():
            if not proc.alive():
                generation += 1
                slots[slot] = start_worker(procs, slot, generation, **poison)

    while kills < 20 and coordinator.alive():
        time.sleep(rng.uniform(0.5, 2.0))
        victim = rng.randrange(WORKERS)
        if slots[victim].alive():
            slots[victim].process.kill()
            slots[victim].process.wait()
            kills += 1
        restart_the_dead()
    assert kills == 20, f"the run ended after {kills} kills"
    # (the poison task goes on killing workers until its delivery limit, possibly after the last
    # kill: they are restarted until the end, as compose's restart policy does, or the job ends
    # on fewer shards than the undisturbed run's four: a local run made 190 of its 200 updates on
    # two workers, and a CI run on 4b466ed, whose log was cut, ended 2.5 points lower)
    deadline = time.monotonic() + RUN_TIMEOUT
    while coordinator.alive() and time.monotonic() < deadline:
        restart_the_dead()
        time.sleep(0.5)

    # Then the ledger, the model, the accuracy and the queues are as if nothing happened
    summary = finish_and_audit(procs, coordinator, amqp_url, topology, management, out,
                               undisturbed, settings).summary
    assert summary["updates_applied"] >= JOB["max_updates"] and summary["expired_tasks"] == 0
    # and the poison task went to the dead-letter queue after its bounded deliveries
    fresh = Broker(amqp_url, name="fedmq-test-dead")
    try:
        dead = [wire.unpack_envelope(d.body).header.get("task_id")
                for d in iter(lambda: fresh.get(topology.dead), None)]
    finally:
        fresh.close()
    assert poison_task.task_id in dead


# ---------------------------------------------------------------- 2. the coordinator dies


def test_kill_9_the_coordinator_5_times_and_it_resumes_from_its_checkpoint(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, undisturbed: float, amqp_url: str) -> None:
    # Given a 200-update run of 4 workers, the updates they send tapped
    out = tapped_workers(procs, broker, topology, tmp_path)
    settings = {**JOB, "out": out, "task_deadline": 20}
    coordinator = procs.start("coordinator", name="c0", wait_for_workers=WORKERS, **settings)

    # When the coordinator dies 5 times, 4 times by SIGKILL at random moments and once by
    # fault injection right after a checkpoint (updates applied and checkpointed, not yet
    # acked), and is restarted with the same directory each time
    rng, last = random.Random(SEED), 0
    for death in range(1, 6):
        if death == 3:
            assert procs.wait(coordinator, 120) == 137, coordinator.log()[-3000:]
            assert "FAULT INJECTION" in coordinator.log()
        else:
            wait_for(lambda: checkpoint_version(out) >= last + 15, 120,  # noqa: B023
                     f"progress before death {death}")
            time.sleep(rng.uniform(0.0, 1.5))
            coordinator.process.kill()
            coordinator.process.wait()
        last = checkpoint_version(out)
        fault = {"fault_coordinator_crash_after_checkpoint": 20} if death == 2 else {}
        coordinator = procs.start("coordinator", name=f"c{death}", **fault, **settings)
        # Then each restart resumes at the version of the checkpoint it found
        wait_for(lambda: re.search(rf"resuming job .* at version {last} ",  # noqa: B023
                                   coordinator.log()), 120,  # noqa: B023
                 f"the resume at version {last}")

    summary = finish_and_audit(procs, coordinator, amqp_url, topology, management, out,
                               undisturbed, settings).summary
    assert summary["resumes"] == 5


def test_sigterm_stops_workers_and_coordinator_cleanly_and_the_job_resumes(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given a run of 2 workers whose tasks take about a second
    tap_updates(broker, topology)
    out = tmp_path / "out"
    workers = [start_worker(procs, slot, 0, train_delay_seconds=1.0) for slot in range(2)]
    settings = {**JOB, "out": out, "max_updates": 30, "concurrency": 2}
    coordinator = procs.start("coordinator", name="c0", **settings)
    wait_for(lambda: checkpoint_version(out) >= 5, 120, "the first versions")

    # When a worker (most likely mid-task) and then the coordinator get SIGTERM
    workers[0].process.send_signal(signal.SIGTERM)
    assert procs.wait(workers[0], 60) == 0, workers[0].log()[-2000:]
    coordinator.process.send_signal(signal.SIGTERM)
    assert procs.wait(coordinator, 60) == 0, coordinator.log()[-2000:]

    # Then both exited cleanly: the worker after finishing or handing back its task, the
    # coordinator with its results and an unfinished checkpoint
    assert "stopped after" in workers[0].log()
    stopped = read_summary(out)
    state = checkpoint.load(checkpoint.path_in(out))
    assert stopped["stopped_early"] and not state["finished"]
    assert state["core"]["version"] == stopped["versions"]

    # and a restart resumes at that version and finishes the job with a clean audit
    start_worker(procs, 0, 1, train_delay_seconds=1.0)
    coordinator = procs.start("coordinator", name="c1", **settings)
    wait_for(lambda: f"at version {stopped['versions']} " in coordinator.log(), 120,
             "the resume")
    assert procs.wait(coordinator, RUN_TIMEOUT) == 0, coordinator.log()[-4000:]
    procs.stop_all()
    result = audit(out, tapped(amqp_url, topology),
                   {k: v for k, v in settings.items() if k != "out"})
    assert result.summary["updates_applied"] >= 30 and result.summary["resumes"] == 1
    queues_end_empty(management, topology)


def test_a_hot_standby_takes_over_when_the_coordinator_dies(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, undisturbed: float, amqp_url: str) -> None:
    # Given a 200-update run, and a standby coordinator on the same directory, loaded and waiting
    out = tapped_workers(procs, broker, topology, tmp_path)
    settings = {**JOB, "out": out}
    active = procs.start("coordinator", name="active", wait_for_workers=WORKERS, **settings)
    wait_for(lambda: checkpoint_version(out) >= 0, 120, "the active coordinator's checkpoint")
    standby = procs.start("coordinator", name="standby", standby=True, **settings)
    wait_for(lambda: "standby: waiting" in standby.log(), 120, "the standby to wait")

    # When the active coordinator is killed mid-run
    wait_for(lambda: checkpoint_version(out) >= 30, 120, "progress")
    active.process.kill()
    active.process.wait()
    killed_at, version = time.monotonic(), checkpoint_version(out)

    # Then the standby takes over at once, at the checkpoint's version, and finishes the job
    wait_for(lambda: f"taking over job {topology.job!r} at version {version}" in standby.log(),
             30, "the take-over")
    wait_for(lambda: checkpoint_version(out) > version, 30, "progress after the take-over")
    took = time.monotonic() - killed_at
    summary = finish_and_audit(procs, standby, amqp_url, topology, management, out,
                               undisturbed, settings).summary
    assert summary["resumes"] == 1
    assert took < 10, f"the job stood still for {took:.1f}s"


# ---------------------------------------------------------------- 3. the broker restarts


def test_restart_the_broker_3_times(tmp_path: Path, undisturbed: float) -> None:
    # Given a private broker node (the shared one is never restarted) and a 200-update run on it
    node = PrivateNode(name="fedmqchaos", amqp_port=5684, management_port=15684)
    node.start()
    procs = Processes(tmp_path, {"FEDMQ_AMQP_URL": node.url, "FEDMQ_JOB": "chaos"})
    topology = Topology(job="chaos")
    try:
        broker = Broker(node.url, name="fedmq-test")
        broker.declare(topology)
        tap_updates(broker, topology)
        broker.close()
        out = tmp_path / "out"
        for slot in range(WORKERS):
            start_worker(procs, slot, 0, train_delay_seconds=0.1)
        settings = {**JOB, "out": out}
        coordinator = procs.start("coordinator", wait_for_workers=WORKERS, **settings)

        # When the broker goes away three times: stop_app/start_app twice, then a full stop
        for restart in ("app", "app", "node"):
            at = checkpoint_version(out)
            wait_for(lambda: checkpoint_version(out) >= at + 25, 180,  # noqa: B023
                     f"progress before the {restart} restart")
            if restart == "app":
                node.stop_app()
                time.sleep(2)
                node.start_app()
            else:
                node.stop()
                time.sleep(2)
                node.start()

        # Then the run completes and the audit holds
        node_management = Management(node.management_url)
        result = finish_and_audit(procs, coordinator, node.url, topology, node_management, out,
                                  undisturbed, settings)
        summary = result.summary
        # and no task was lost on the way: none waited out its deadline, none was dead-lettered
        # (tasks go out without confirms: those in flight at a lost connection are issued again
        # at once, counted apart as reissued_tasks)
        assert summary["updates_applied"] >= JOB["max_updates"] and summary["expired_tasks"] == 0
        # The only dead letters allowed are second answers: a worker whose connection went with
        # the broker after its update was confirmed but before it acked the task leaves the task
        # to be redelivered and trained again; that answer is refused (docs/reliability.md, the
        # broker-restart row and "one answer per task"), counted and dead-lettered. Each is an
        # update for a task an applied update answered: a late first answer would fail here.
        dead = dead_letters(node.url, topology)
        assert all(kind == "weight_update" and code in SECOND_ANSWER and
                   task in result.answered_tasks for kind, code, task in dead), dead
        refused = {code for code, count in summary["rejected_by_reason"].items() if count}
        assert refused <= set(SECOND_ANSWER), summary["rejected_by_reason"]
        # (a rejection whose dead letter was lost with the connection is rejected again on
        # redelivery and counted twice: at most as many dead letters as rejections)
        assert bool(dead) == bool(summary["updates_rejected"]) and \
            len(dead) <= summary["updates_rejected"], (summary["rejected_by_reason"], dead)
    finally:
        procs.stop_all()
        node.destroy()


# ---------------------------------------------------------------- 4. training outlasts heartbeats


def test_a_task_lasting_three_heartbeats_is_applied_once(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, amqp_url: str) -> None:
    # Given a worker with 1 s heartbeats whose every task takes over 4.5 s (> 3 intervals)
    tap_updates(broker, topology)
    out = tmp_path / "out"
    worker = procs.start("worker", shard_index=0, num_shards=1, heartbeat=1,
                         train_delay_seconds=4.5)
    settings: dict[str, Any] = {"max_updates": 2, "concurrency": 1, "out": out, "heartbeat": 1}
    coordinator = procs.start("coordinator", **settings)

    # When the job runs to its end
    assert procs.wait(coordinator, 120) == 0, worker.log()
    assert "broker unavailable" not in worker.log() and worker.alive()
    procs.stop_all()

    # Then each update was applied exactly once and the ledger audit holds
    result = audit(out, tapped(amqp_url, topology),
                   {k: v for k, v in settings.items() if k != "out"})
    assert result.summary["updates_applied"] == 2 == len(result.applied)
    assert result.summary["duplicates"] == 0 and result.summary["updates_rejected"] == 0
    queues_end_empty(management, topology)


# ---------------------------------------------------------------- 5. garbage on the updates queue


KINDS = 9
TARGETED = {4: "non_finite", 5: "shape_mismatch", 8: "dtype_mismatch"}  # kind -> its code


def bad_bodies(count: int, max_bytes: int, rng: np.random.Generator, tasks: list[str],
               version: Callable[[], int], template: tuple[np.ndarray, ...]) -> Iterator[bytes]:
    """Malformed, truncated, oversized, random and wrongly-shaped bodies, cycling through kinds.
    The NaN, wrong-shape and wrong-dtype ones answer `tasks`: issued by the coordinator and never
    answered (an answered task refuses every other update before validation), from a version
    the coordinator has (`version()`, read again every 500 bodies), so each passes the task,
    ownership and version checks and reaches the check it targets."""

    def forged(weights: tuple[np.ndarray, ...], task_id: str | None = None,
               base_version: int = 0) -> bytes:
        return wire.encode(WeightUpdate(update_id=new_id(), worker_id="w",
                                        task_id=task_id or new_id(), base_version=base_version,
                                        num_examples=1, train_seconds=0.1, weights=weights))

    good_body = forged(template, task_id="t")
    for index in range(count):
        if index % 500 == 0:
            current = version()
        real = {"task_id": tasks[index % len(tasks)], "base_version": current}
        kind = index % KINDS
        if kind == 0:  # random bytes
            yield rng.bytes(int(rng.integers(0, 3000)))
        elif kind == 1:  # a valid update cut short
            yield good_body[:int(rng.integers(1, len(good_body)))]
        elif kind == 2:  # oversized (one in ten of this kind), else empty
            yield rng.bytes(max_bytes + 1) if index % (10 * KINDS) == 2 else b""
        elif kind == 3:  # a valid envelope of the wrong kind
            yield wire.encode(ModelRequest(worker_id=f"x{index}"))
        elif kind == 4:  # NaN weights, for an issued task
            yield forged(tuple(np.full_like(w, math.nan) for w in template), **real)
        elif kind == 5:  # wrong shapes, for an issued task
            yield forged((np.zeros(3, np.float32),), **real)
        elif kind == 6:  # one byte flipped
            body = bytearray(good_body)
            body[int(rng.integers(0, len(body)))] ^= 0xFF
            yield bytes(body)
        elif kind == 7:  # an update for a task never issued
            yield forged(template)
        else:  # float64 weights of the right shapes, for an issued task
            yield forged(tuple(w.astype(np.float64) for w in template), **real)


def steal_tasks(broker: Broker, topology: Topology, count: int) -> list[str]:
    """Take `count` tasks off the tasks queue and ack them unanswered (lost tasks)."""
    stolen: list[str] = []

    def take() -> bool:
        while len(stolen) < count and (delivery := broker.get(topology.tasks)) is not None:
            broker.ack(delivery)
            stolen.append(wire.decode(delivery.body, TrainTask).task_id)
        return len(stolen) >= count
    wait_for(take, 120, f"{count} tasks to take")
    return stolen


def test_10000_bad_bodies_change_nothing(
        procs: Processes, broker: Broker, topology: Topology, management: Management,
        tmp_path: Path, undisturbed: float, amqp_url: str) -> None:
    # Given a 200-update run of 4 workers, the updates they send tapped, and two of its first
    # tasks taken off the queue before the workers start (issued, never answered: the fuzz
    # bodies answer them; the first body for each makes the coordinator issue another task)
    tap_updates(broker, topology)
    out = tmp_path / "out"
    max_bytes = 256 * 1024
    settings = {**JOB, "out": out, "max_message_bytes": max_bytes, "drain_seconds": 180}
    coordinator = procs.start("coordinator", **settings)  # tasks at once, workers or not
    stolen = steal_tasks(broker, topology, 2)
    for slot in range(WORKERS):
        start_worker(procs, slot, 0, train_delay_seconds=0.1)
    wait_for(lambda: checkpoint_version(out) >= 5, 180, "the first versions")

    # When 10,000 bad bodies are published straight to the updates queue during the run
    rng = np.random.default_rng(SEED)
    template = tuple(models.build("digits_mlp", SEED).get_weights())
    publisher = Broker(amqp_url, name="fedmq-test-fuzz")  # the fixture's may have idled out
    try:
        for body in bad_bodies(10_000, max_bytes, rng, stolen,
                               lambda: checkpoint_version(out), template):
            publisher.publish("", topology.updates, body)
    finally:
        publisher.close()
    assert coordinator.alive(), "the run ended before the bad bodies were all published"

    # Then the coordinator never crashed, every bad body was rejected and dead-lettered, and
    # the model is exactly what the valid updates alone produce
    summary = finish_and_audit(procs, coordinator, amqp_url, topology, management, out,
                               undisturbed, settings).summary
    assert summary["updates_rejected"] == 10_000, summary["rejected_by_reason"]
    # and each targeted kind reached the check it targets (issue 14, item 9)
    reasons = summary["rejected_by_reason"]
    for kind, code in TARGETED.items():
        assert reasons.get(code) == len(range(kind, 10_000, KINDS)), (code, reasons)
    assert summary["expired_tasks"] == 0
    wait_for(lambda: (management.queue(topology.dead) or {}).get("messages") == 10_000, 30,
             "10,000 messages in the dead-letter queue")
