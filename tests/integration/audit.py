"""The ledger audit of the chaos tests: what the workers sent against what the coordinator applied.

A tap queue bound to the inbox exchange with the updates' routing key receives a copy of every
update the broker confirmed to a worker (the broker confirms a persistent message only once every
queue it was routed to holds it). After the run, the audit checks against the coordinator's
ledger.json and checkpoint that
- every confirmed update was decided (applied, or rejected with a reason), nothing was applied
  that no worker sent, and no update was applied twice;
- versions only increased, and each applied update made exactly one version (FedAsync);
- replaying the applied updates, in the ledger's order, from the initial model with the same
  strategy gives the coordinator's final weights bit for bit: nothing was applied that is not in
  the ledger, nothing in the ledger was left out, nothing counted twice.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import chunks, models, wire
from common.amqp import Broker
from common.messages import WeightUpdate
from common.settings import CoordinatorSettings, TrainingSettings
from common.topology import UPDATE_KEY, Topology
from coordinator import checkpoint
from coordinator.core import CoordinatorCore
from coordinator.strategies import make_strategy
from fedmq.management import Management
from tests.integration.broker_tools import declare_queue
from tests.integration.support import wait_for


def tap_name(topology: Topology) -> str:
    return f"{topology.updates}.audit-tap"


def tap_updates(broker: Broker, topology: Topology) -> str:
    """Declare (durable, quorum) and bind the tap queue; call before any worker publishes."""
    name = tap_name(topology)
    declare_queue(broker, name, topology.inbox, routing_key=UPDATE_KEY,
                  arguments={"x-queue-type": "quorum"})
    return name


def tapped_updates(broker: Broker, topology: Topology) -> dict[str, WeightUpdate]:
    """Every update in the tap queue, by update id (the queue is emptied); chunked updates are
    reassembled, and transfers that do not reassemble (forged by a test) are left out."""
    found: dict[str, WeightUpdate] = {}
    joiner = chunks.Reassembler(chunks.MemoryStore(), max_body_bytes=2**40, max_partials=10**6,
                                expiry_seconds=float("inf"))
    while (delivery := broker.get(tap_name(topology))) is not None:
        broker.ack(delivery)
        body: bytes | bytearray | None = delivery.body
        if chunks.is_chunk(delivery.headers):
            try:
                body = joiner.add(chunks.parse(delivery.headers), delivery.body).body
            except chunks.ChunkError:
                body = None
        if body is not None:
            update = wire.decode(body, WeightUpdate)
            found[update.update_id] = update
    return found


@dataclass
class Audit:
    applied: list[str]
    versions: list[int]
    summary: dict[str, Any]
    state: dict[str, Any]
    answered_tasks: set[str]  # the tasks an applied update answered


def audit(out: Path, sent: dict[str, WeightUpdate], settings: dict[str, Any]) -> Audit:
    """Check the run in `out` against the updates `sent`; `settings` are the coordinator's
    settings that shape the math (strategy, alpha, seed, ...). Fails with the discrepancy."""
    ledger = json.loads((out / "ledger.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    state = checkpoint.load(checkpoint.path_in(out))
    applied = [update_id for update_id, _ in ledger["applied"]]
    decided = set(applied) | set(ledger["rejected"])

    # (The ledger cannot list an id twice: it is the coordinator's dict of accepted ids. What
    # proves nothing was applied twice is the replay below, and versions == applied updates.)
    lost = set(sent) - decided
    assert not lost, f"confirmed but never decided: {sorted(lost)[:5]} ({len(lost)})"
    invented = set(applied) - set(sent)
    assert not invented, f"applied but never sent by a worker: {sorted(invented)[:5]}"
    assert state["finished"] and state["core"]["version"] == summary["versions"]

    with (out / "history.csv").open() as handle:
        versions = [int(row["version"]) for row in csv.DictReader(handle)]
    made = sorted(set(versions))
    assert made == list(range(made[0], made[-1] + 1)), "versions skipped or went back"
    assert all(b >= a for a, b in zip(versions, versions[1:], strict=False)), \
        f"history versions went back: {versions}"

    replay_weights = replay(applied, [v for _, v in ledger["applied"]], sent, settings)
    final = state["core"]["weights"]
    assert len(final) == len(replay_weights)
    for mine, theirs in zip(replay_weights, final, strict=True):
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), \
            "the final model is not what the applied updates produce"
    return Audit(applied, versions, summary, state, {sent[u].task_id for u in applied})


def replay(applied: list[str], at_versions: list[int], sent: dict[str, WeightUpdate],
           settings: dict[str, Any]) -> list[np.ndarray]:
    """Apply `applied` (in order) to the initial model with a fresh core and the same strategy."""
    coordinator = CoordinatorSettings(**settings)
    name = models.resolve_name(coordinator.model, coordinator.dataset)
    weights = [np.array(w) for w in models.build(name, coordinator.seed).get_weights()]
    strategy = make_strategy(coordinator)
    core = CoordinatorCore(weights=weights, strategy=strategy,
                           max_staleness=coordinator.staleness_limit(),
                           training=TrainingSettings(), job=coordinator.job)
    core.issued = {update.task_id for update in sent.values()}
    for update_id, version in zip(applied, at_versions, strict=True):
        assert core.version == version, f"{update_id} was accepted at version {version}, " \
                                        f"the replay is at {core.version}"
        outcome = core.handle(sent[update_id])
        assert outcome.kind in ("applied", "buffered"), outcome
    core.flush()
    return list(core.weights)


def queues_end_empty(management: Management, topology: Topology,
                     queues: tuple[str, ...] = ()) -> None:
    """Tasks and updates (and `queues`) hold no message, ready or unacked."""
    names = (topology.tasks, topology.updates, *queues)

    def empty() -> bool:
        for name in names:
            info = management.queue(name) or {}
            if info.get("messages", 0) or info.get("messages_unacknowledged", 0):
                return False
        return True

    wait_for(empty, 30, f"empty queues {names}: "
             f"{[(n, (management.queue(n) or {}).get('messages')) for n in names]}", every=1.0)
