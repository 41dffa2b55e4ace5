"""Sealed mode under a coordinator crash (issue 14, item 7): a sealed run with local DP whose
coordinator dies between a checkpoint and its acks, then resumes. The updates it had applied but
not acked come back: they must count as duplicates, not as replays, and no worker's privacy
spending may count an update twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.amqp import Broker
from common.topology import Topology
from coordinator import checkpoint
from tests.integration.support import Processes, read_summary, sealed_keys

pytestmark = pytest.mark.integration



def test_a_sealed_coordinator_killed_between_checkpoint_and_ack_counts_duplicates_not_replays(
        procs: Processes, broker: Broker, topology: Topology, tmp_path: Path) -> None:
    # Given a sealed job with local DP (clip 1, noise multiplier 1) and two registered workers
    keys = sealed_keys(tmp_path / "keys", ["w0", "w1"])
    out = tmp_path / "out"
    settings = {"max_updates": 30, "concurrency": 2, "out": out, "dataset": "digits",
                "identity": keys / "coordinator.key", "registry": keys / "reg.json",
                "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0, "drain_seconds": 5}
    for index in range(2):
        procs.start("worker", name=f"w{index}", identity=keys / f"w{index}.key",
                    coordinator_key=keys / "coordinator.pub", dataset="digits",
                    num_shards=2, shard_index=index, train_delay_seconds=0.2)

    # When the coordinator dies right after its 8th checkpoint (updates applied, not acked)
    first = procs.start("coordinator", name="c0", fault_coordinator_crash_after_checkpoint=8,
                        **settings)
    assert procs.wait(first, 180) == 137, first.log()[-3000:]
    assert "FAULT INJECTION" in first.log()
    # and is started again on the same directory
    second = procs.start("coordinator", name="c1", **settings)
    assert procs.wait(second, 240) == 0, second.log()[-4000:]

    # Then the updates it had not acked came back as duplicates, none was taken for a replay
    summary = read_summary(out)
    assert summary["resumes"] == 1, summary
    assert summary["duplicates"] >= 1, summary
    assert "replayed" not in summary["rejected_by_reason"], summary["rejected_by_reason"]
    dead = []
    while (delivery := broker.get(topology.dead)) is not None:
        broker.ack(delivery)
        dead.append(str(delivery.headers.get("x-fedmq-code")))
    assert "replayed" not in dead, dead
    # and each worker's privacy spending counts every update it sent once: the releases
    # checkpointed are exactly the distinct updates decided (applied or rejected)
    ledger = json.loads((out / "ledger.json").read_text())
    releases = checkpoint.load(checkpoint.path_in(out))["intake"]["releases"]
    assert sum(int(n) for n in releases.values()) == \
        len(ledger["applied"]) + len(ledger["rejected"]), (releases, summary)
