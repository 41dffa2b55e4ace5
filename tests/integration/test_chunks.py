"""Bodies of any size (issue 15) on a private broker whose max_message_size is 1 MiB: a model of
about 2.6 MB and its updates travel in chunks; forged chunks are refused with a reason and the
job carries on; a coordinator killed mid-transfer resumes and applies the update exactly once."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common import chunks, wire
from common.amqp import Broker
from common.messages import TrainTask, WeightUpdate, new_id
from common.topology import UPDATE_KEY, Topology
from fedmq.management import Management
from tests.integration.audit import audit, tap_updates, tapped_updates
from tests.integration.private_node import PrivateNode
from tests.integration.support import Processes, fetch_model, read_summary, wait_for

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
# 64 -> 10,000 -> 10: about 750k float32 parameters, about 3 MB encoded (3 chunks of 1 MiB)
MODEL = """
    import keras

    def build():
        return keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(10000, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
"""
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateNode]:
    private = PrivateNode(name="fedmqchunks", amqp_port=5694, management_port=15694,
                          extra_config=f"max_message_size = {MiB}")
    private.start()
    yield private
    private.destroy()


@pytest.fixture
def job(node: PrivateNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[tuple[Processes, Topology, dict[str, Any]]]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "chunky_model.py").write_text(textwrap.dedent(MODEL))
    monkeypatch.syspath_prepend(str(plugins))  # the audit builds the model too
    topology = Topology(job=f"c{new_id()[:8]}")
    procs = Processes(tmp_path, {"FEDMQ_AMQP_URL": node.url, "FEDMQ_JOB": topology.job,
                                 "PYTHONPATH": f"{plugins}:{os.environ.get('PYTHONPATH', '')}",
                                 "FEDMQ_MAX_MESSAGE_BYTES": str(MiB)})
    settings = {"model": "chunky_model:build", "local_epochs": 1, "seed": 0}
    try:
        yield procs, topology, settings
    finally:
        procs.stop_all()


def publish_chunks(url: str, topology: Topology, parts: list[tuple[Any, bytes]]) -> None:
    """On a connection of its own (the test's idles while processes start)."""
    broker = Broker(url, name="fedmq-test-sender")
    try:
        for header, data in parts:
            broker.publish(topology.inbox, UPDATE_KEY, data, headers=header.fields())
    finally:
        broker.close()


def chunked(body: bytes, size: int = 256 * 1024) -> list[tuple[chunks.ChunkHeader, bytes]]:
    return [(header, bytes(part)) for header, part in chunks.split(body, size)]


def test_a_model_over_the_message_limit_trains_in_chunks_and_forged_chunks_are_refused(
        node: PrivateNode, job: tuple[Processes, Topology, dict[str, Any]],
        tmp_path: Path) -> None:
    procs, topology, settings = job
    out = tmp_path / "out"
    broker = Broker(node.url, name="fedmq-test")
    broker.declare(topology)
    tap_updates(broker, topology)
    # Given a coordinator (waiting for two workers) on a broker refusing messages over 1 MiB
    coordinator = procs.start("coordinator", out=out, max_updates=6, concurrency=2,
                              wait_for_workers=2, chunk_expiry_seconds=10, drain_seconds=2,
                              **settings)
    broker.close()
    management = Management(node.management_url)
    wait_for(lambda: (management.queue(topology.updates) or {}).get("consumers", 0) >= 1, 120,
             "the coordinator consuming updates")

    # When someone publishes a transfer with a corrupted chunk and one whose last chunk never
    # comes, and then two workers join
    junk = wire.encode(WeightUpdate(update_id=new_id(), worker_id="forger", task_id=new_id(),
                                    base_version=0, num_examples=1, train_seconds=0.0,
                                    weights=(np.zeros(200_000, np.float32),)))
    corrupt = chunked(junk)
    corrupt[1] = (corrupt[1][0], b"\xff" * len(corrupt[1][1]))
    publish_chunks(node.url, topology, corrupt)
    publish_chunks(node.url, topology, chunked(junk)[:-1])
    wait_for(lambda: "incomplete: 3 of 4 chunks" in coordinator.log(), 60, "the expiry")
    for index in range(2):
        procs.start("worker", shard_index=index, **settings)

    # Then the job ends, every worker update applied once (the ledger audit)
    assert procs.wait(coordinator, RUN_TIMEOUT) == 0, coordinator.log()[-4000:]
    procs.stop_all()
    broker = Broker(node.url, name="fedmq-test-audit")
    result = audit(out, tapped_updates(broker, topology), settings)
    broker.close()
    assert len(result.applied) == result.summary["updates_applied"] >= 6
    # And both forged transfers were refused with a reason, counted, the corrupt one dead-lettered
    assert result.summary["rejected_by_reason"].get("chunks") == 2, result.summary
    dead = management.get_messages(topology.dead)
    reasons = [m["properties"]["headers"]["x-fedmq-reason"] for m in dead]
    assert any("corrupt" in reason for reason in reasons), reasons


def spooled_chunks(out: Path) -> int:
    return len(list((out / "spool").glob("*/*.chunk")))


def test_a_coordinator_killed_mid_transfer_resumes_and_applies_the_update_once(
        node: PrivateNode, job: tuple[Processes, Topology, dict[str, Any]],
        tmp_path: Path) -> None:
    procs, topology, settings = job
    out = tmp_path / "out"
    broker = Broker(node.url, name="fedmq-test")
    # Given a coordinator waiting for one update, and a task of it in the test's hands
    options = {**settings, "out": out, "max_updates": 1, "concurrency": 1, "drain_seconds": 1}
    coordinator = procs.start("coordinator", **options)
    delivery = wait_for(lambda: broker.exists(topology.tasks) and broker.get(topology.tasks),
                        120, "a task")
    assert delivery
    task = wire.decode(delivery.body, TrainTask)
    broker.ack(delivery)
    model = fetch_model(broker, topology, timeout=30)
    broker.close()
    update = WeightUpdate(update_id=new_id(), worker_id="test", task_id=task.task_id,
                          base_version=model.version, num_examples=10, train_seconds=0.1,
                          weights=tuple(np.asarray(w) + 0.01 for w in model.weights))
    parts = chunked(wire.encode(update))
    assert len(parts) > 8

    # When half its chunks are spooled and the coordinator is killed with SIGKILL
    publish_chunks(node.url, topology, parts[:len(parts) // 2])
    wait_for(lambda: spooled_chunks(out) >= len(parts) // 2, 60, "chunks spooled")
    coordinator.process.send_signal(signal.SIGKILL)
    coordinator.process.wait(30)
    # and it is restarted, and the rest of the chunks arrive (the first half again too)
    resumed = procs.start("coordinator", name="resumed", **options)
    wait_for(lambda: "resum" in resumed.log().lower(), 120, "the resume")
    publish_chunks(node.url, topology, parts[len(parts) // 2 - 1:])
    publish_chunks(node.url, topology, parts[:2])  # a sender retrying: duplicates

    # Then the update is applied exactly once, and the spool is empty
    assert procs.wait(resumed, RUN_TIMEOUT) == 0, resumed.log()[-4000:]
    ledger = json.loads((out / "ledger.json").read_text())
    assert [uid for uid, _ in ledger["applied"]] == [update.update_id]
    summary = read_summary(out)
    assert summary["updates_applied"] == 1 and summary["versions"] == 1, summary
    assert not summary["rejected_by_reason"], summary
    assert spooled_chunks(out) == 0
