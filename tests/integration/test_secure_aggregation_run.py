"""Secure aggregation on the real broker with real processes: a short digits FedBuff job whose
coordinator sees only masked shares ends with a useful model, and the helper's journal shows
every buffer it unmasked: at least K_min updates each, no update in two of them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from common import identity
from common.topology import Topology
from tests.integration.conftest import cleanup_job
from tests.integration.support import AMQP_URL, Processes, read_summary

pytestmark = pytest.mark.integration
WORKERS = ("w0", "w1", "w2")
K = 4
MAX_UPDATES = 24


def make_keys(keys: Path) -> None:
    """What `fedmq keys generate` and `register` write, made in-process (seconds faster)."""
    registry = identity.Registry()
    for name in ("coordinator", "helper", *WORKERS):
        made = identity.Identity.generate(name)
        identity.save_identity(made, keys)
        if name in WORKERS:
            registry.add(made.public())
    registry.save(keys / "reg.json")


def start_secure_job(procs: Processes, keys: Path, out: Path, state: Path,
                     **coordinator: object) -> None:
    """The helper, three sealed workers (one slower) and a secure-aggregation coordinator."""
    procs.start("helper", name="helper", identity=keys / "helper.key",
                registry=keys / "reg.json", coordinator_key=keys / "coordinator.pub", k_min=3,
                state_dir=state)
    for index, name in enumerate(WORKERS):
        procs.start("worker", name=name, identity=keys / f"{name}.key",
                    coordinator_key=keys / "coordinator.pub", helper_key=keys / "helper.pub",
                    shard_index=index, num_shards=3, slowdown=3.0 if index == 2 else 1.0)
    procs.start("coordinator", name="coordinator", strategy="fedbuff", buffer_size=K,
                max_updates=MAX_UPDATES, concurrency=3, wait_for_workers=3, out=out,
                secure_aggregation=True, secure_clip=5.0, max_update_norm_factor=0,
                identity=keys / "coordinator.key", registry=keys / "reg.json",
                helper_key=keys / "helper.pub", drain_seconds=2, **coordinator)


def journal(state: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state / "helper.journal").read_text().splitlines()]


def test_a_secure_fedbuff_job_runs_to_its_end(procs: Processes, topology: Topology,
                                              tmp_path: Path) -> None:
    keys, out, state = tmp_path / "keys", tmp_path / "out", tmp_path / "helper"
    make_keys(keys)
    try:
        # Given a helper, three workers and a coordinator with secure aggregation
        start_secure_job(procs, keys, out, state)
        coordinator = procs.started[-1]
        # When the job runs to its end
        assert procs.wait(coordinator, 170) == 0, procs.logs()
        # Then every update is in the model, a buffer of K per version, with a useful model
        summary = read_summary(out)
        assert summary["updates_applied"] == MAX_UPDATES, summary
        assert summary["updates_rejected"] == 0 and summary["versions"] == MAX_UPDATES // K
        assert summary["final_accuracy"] >= 0.75, summary
        # And the helper unmasked exactly those buffers: K updates each, none in two
        buffers = journal(state)
        members = [m[0] for b in buffers for m in b["members"]]  # type: ignore[attr-defined]
        assert len(buffers) == MAX_UPDATES // K and len(members) == len(set(members))
        assert all(len(b["members"]) == K for b in buffers)  # type: ignore[arg-type]
        assert "answered buffer" in procs.started[0].log()
    finally:
        with contextlib.suppress(Exception):
            cleanup_job(AMQP_URL, Topology(topology.job, secure=True))
