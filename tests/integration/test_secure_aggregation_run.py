"""Secure aggregation on the real broker with real processes: a short digits FedBuff job whose
coordinator sees only masked shares ends with a useful model and a clean ledger audit
(secure_audit.py), undisturbed and with the helper and the coordinator killed mid-job."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest

from common import identity
from common.amqp import Broker
from common.errors import FedmqError
from common.topology import Topology
from tests.integration.audit import tap_name, tap_updates
from tests.integration.conftest import cleanup_job
from tests.integration.secure_audit import journal, opened_updates, secure_audit
from tests.integration.support import AMQP_URL, Proc, Processes, read_summary, wait_for

pytestmark = pytest.mark.integration
WORKERS = ("w0", "w1", "w2")
K = 4
MAX_UPDATES = 24
COORDINATOR = {"strategy": "fedbuff", "buffer_size": K, "max_updates": MAX_UPDATES,
               "concurrency": 3, "secure_aggregation": True, "secure_clip": 5.0,
               "max_update_norm_factor": 0, "helper_timeout": 10, "drain_seconds": 2}


def make_keys(keys: Path) -> None:
    """What `fedmq keys generate` and `register` write, made in-process (seconds faster)."""
    registry = identity.Registry()
    for name in ("coordinator", "helper", *WORKERS):
        made = identity.Identity.generate(name)
        identity.save_identity(made, keys)
        if name in WORKERS:
            registry.add(made.public())
    registry.save(keys / "reg.json")


def coordinator_keys(keys: Path) -> dict[str, Path]:
    return {"identity": keys / "coordinator.key", "registry": keys / "reg.json",
            "helper_key": keys / "helper.pub"}


def helper_settings(keys: Path, state: Path) -> dict[str, object]:
    return {"identity": keys / "helper.key", "registry": keys / "reg.json",
            "coordinator_key": keys / "coordinator.pub", "k_min": 3, "state_dir": state}


def start_secure_job(procs: Processes, keys: Path, out: Path, state: Path,
                     train_delay_seconds: float = 0.0, **fault: object) -> None:
    """The helper, three sealed workers (one slower) and a secure-aggregation coordinator."""
    procs.start("helper", name="helper", **helper_settings(keys, state))
    for index, name in enumerate(WORKERS):
        procs.start("worker", name=name, identity=keys / f"{name}.key",
                    coordinator_key=keys / "coordinator.pub", helper_key=keys / "helper.pub",
                    shard_index=index, num_shards=3, slowdown=3.0 if index == 2 else 1.0,
                    train_delay_seconds=train_delay_seconds)
    procs.start("coordinator", name="coordinator", wait_for_workers=3, out=out,
                **coordinator_keys(keys), **COORDINATOR, **fault)


def cleanup(topology: Topology) -> None:
    """The job's queues with the helper's, and the audit tap."""
    cleanup_job(AMQP_URL, Topology(topology.job, secure=True))
    broker = Broker(AMQP_URL, name="fedmq-test-cleanup")
    try:
        with contextlib.suppress(FedmqError):
            broker.delete(tap_name(topology))
    finally:
        broker.close()


def finished_and_audited(procs: Processes, coordinator: Proc, topology: Topology, keys: Path,
                         out: Path, state: Path) -> dict[str, Any]:
    assert procs.wait(coordinator, 300) == 0, procs.logs()
    summary = read_summary(out)
    assert summary["updates_applied"] == MAX_UPDATES, summary
    assert summary["updates_rejected"] == 0 and summary["versions"] == MAX_UPDATES // K
    assert summary["final_accuracy"] >= 0.75, summary
    secure_audit(out, state, opened_updates(AMQP_URL, topology, keys, WORKERS), keys, WORKERS,
                 {**COORDINATOR, "job": topology.job, "identity": keys / "coordinator.key",
                  "registry": keys / "reg.json", "helper_key": keys / "helper.pub"}, k_min=3)
    assert all(len(b["members"]) == K for b in journal(state))
    return summary


def test_a_secure_fedbuff_job_runs_to_its_end(procs: Processes, broker: Broker,
                                              topology: Topology, tmp_path: Path) -> None:
    keys, out, state = tmp_path / "keys", tmp_path / "out", tmp_path / "helper"
    make_keys(keys)
    tap_updates(broker, topology)
    try:
        # Given a helper, three workers and a coordinator with secure aggregation
        start_secure_job(procs, keys, out, state)
        # When the job runs to its end
        # Then every update is in the model once, a buffer of K per version, the audit holds
        finished_and_audited(procs, procs.started[-1], topology, keys, out, state)
        assert "answered buffer" in procs.started[0].log()
    finally:
        cleanup(topology)


@pytest.mark.chaos
def test_the_helper_and_the_coordinator_killed_mid_job(procs: Processes, broker: Broker,
                                                       topology: Topology,
                                                       tmp_path: Path) -> None:
    keys, out, state = tmp_path / "keys", tmp_path / "out", tmp_path / "helper"
    make_keys(keys)
    tap_updates(broker, topology)
    try:
        # Given a secure job whose coordinator will die right after its 3rd request to the
        # helper (buffer 1, then buffer 2 and, --helper-timeout later, buffer 2 again: while a
        # buffer waits for the helper no task goes out, so no 3rd buffer fills)
        start_secure_job(procs, keys, out, state, train_delay_seconds=1.0,
                         fault_coordinator_crash_after_asking_helper=3)
        # When the helper is killed with SIGKILL once it has answered the first buffer
        wait_for(lambda: (state / "helper.journal").exists() and len(journal(state)) >= 1,
                 300, "the first buffer answered")
        helper = procs.started[0]
        helper.process.kill()
        helper.process.wait()
        # And the coordinator dies after asking (its requests for buffer 2 wait in the
        # helper's queue)
        first = procs.started[-1]
        assert procs.wait(first, 300) == 137, first.log()[-3000:]
        assert len(journal(state)) == 1, "the helper answered after its kill"
        # And both are restarted: the coordinator asks again for the buffers it sealed
        coordinator = procs.start("coordinator", name="c1", out=out, **coordinator_keys(keys),
                                  **COORDINATOR)
        # (buffer 2 asked at the restart, then again after --helper-timeout: about 10 s)
        wait_for(lambda: coordinator.log().count("asked the helper") >= 2, 300,
                 "buffer 2 asked for again, twice")
        procs.start("helper", name="helper-2", **helper_settings(keys, state))
        # Then the job ends with every update applied once and a clean audit
        finished_and_audited(procs, coordinator, topology, keys, out, state)
        # And every request for a buffer already answered was answered again, identically,
        # and applied once: one answer per request, one step per buffer
        # (the request the fault kills the coordinator after is never logged, so the count
        # comes from the helpers: each buffer answered once, then "again" per request)
        # The kill can land anywhere after the first helper's journal line: before its log
        # line, before its answer is published (that answer never leaves, its request comes
        # back to helper-2 as "again" and the restarted coordinator applies that buffer from
        # an "again" answer) or after. So the counts come from the journal, not that log.
        helpers = procs.started[0].log() + procs.started[-1].log()
        buffers = [entry["buffer"] for entry in journal(state)]
        assert len(buffers) == len(set(buffers)) == MAX_UPDATES // K, buffers
        answered = re.findall(r"answered buffer (\w+)", helpers)
        assert len(answered) == len(set(answered)) >= MAX_UPDATES // K - 1, helpers
        again = procs.started[-1].log().count("answered again")
        assert again >= 2, helpers
        resumed = re.search(r"resuming job .* at version (\d+)", coordinator.log())
        assert resumed is not None, coordinator.log()
        unapplied = 1 - int(resumed.group(1))  # of the one buffer the first helper journaled
        assert unapplied in (0, 1), (resumed.group(0), helpers)
        ignored = coordinator.log().count("(applied before); ignored")
        assert ignored == again - unapplied, coordinator.log()
    finally:
        cleanup(topology)
