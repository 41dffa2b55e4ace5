"""The ledger audit of secure-aggregation runs (the shape of audit.py, for masked updates).

The test holds every key, so it can do what no party of the run can: open the updates the
workers sent (sealed to the coordinator: the shares) and their mask seeds (sealed to the helper),
and check against the coordinator's ledger, checkpoint and the helper's journal that
- every update a worker got confirmed was decided (applied or rejected), none applied twice,
  none applied that no worker sent;
- the helper unmasked each buffer once, with at least K_min updates, no update in two buffers,
  and the buffers' members are exactly the applied updates, each with the integer staleness
  weight its accepted version implies;
- replaying the buffers in the journal's order from the initial model, with the shares and the
  masks from the seeds, gives the coordinator's final weights bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common import identity, masking, models, sealed_wire
from common.amqp import Broker
from common.messages import MaskSeed, WeightUpdate
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator import checkpoint
from coordinator.strategies import SecureFedBuff, make_strategy
from coordinator.strategies.secure_fedbuff import SealedBuffer, secure_weight
from tests.integration.audit import tap_name


def opened_updates(url: str, topology: Topology, keys: Path,
                   workers: tuple[str, ...]) -> dict[str, WeightUpdate]:
    """Every tapped update, opened with the coordinator's key (the tap queue is emptied)."""
    me = identity.load_identity(keys / "coordinator.key")
    trusted = {w: identity.load_public(keys / f"{w}.pub").signing for w in workers}
    broker = Broker(url, name="fedmq-test-secure-audit")
    found: dict[str, WeightUpdate] = {}
    try:
        while (delivery := broker.get(tap_name(topology))) is not None:
            broker.ack(delivery)
            update, _ = sealed_wire.decode_sealed(delivery.body, WeightUpdate, trusted=trusted,
                                                  me=me)
            found[update.update_id] = update
    finally:
        broker.close()
    return found


def journal(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "helper.journal").read_text().splitlines()]


def secure_audit(out: Path, state: Path, sent: dict[str, WeightUpdate], keys: Path,
                 workers: tuple[str, ...], settings: dict[str, Any], k_min: int) -> None:
    ledger = json.loads((out / "ledger.json").read_text())
    saved = checkpoint.load(checkpoint.path_in(out))
    applied = dict((u, int(v)) for u, v in ledger["applied"])
    assert len(applied) == len(ledger["applied"]), "an update id is in the ledger twice"
    lost = set(sent) - set(applied) - set(ledger["rejected"])
    assert not lost, f"confirmed but never decided: {sorted(lost)[:5]} ({len(lost)})"
    assert not set(applied) - set(sent), "applied but never sent by a worker"

    buffers = journal(state)
    members = [u for b in buffers for u, _ in b["members"]]
    assert len(members) == len(set(members)), "an update is in two unmasked buffers"
    assert all(len(b["members"]) >= k_min for b in buffers), "a buffer below K_min"
    assert set(members) == set(applied), "unmasked buffers and applied updates differ"

    coordinator = CoordinatorSettings(**settings)
    for buffer in buffers:
        for update_id, weight in buffer["members"]:
            staleness = applied[update_id] - sent[update_id].base_version
            assert weight == secure_weight(staleness, coordinator.secure_weight_resolution)

    helper = identity.load_identity(keys / "helper.key")
    trusted = {w: identity.load_public(keys / f"{w}.pub").signing for w in workers}
    strategy = make_strategy(coordinator)
    assert isinstance(strategy, SecureFedBuff)
    name = models.resolve_name(coordinator.model, coordinator.dataset)
    current = [np.array(w) for w in models.build(name, coordinator.seed).get_weights()]
    size = sum(int(w.size) for w in current)
    for buffer in buffers:
        ids = [u for u, _ in buffer["members"]]
        weights = [int(w) for _, w in buffer["members"]]
        seeds = [sealed_wire.decode_sealed(sent[u].helper_seed, MaskSeed, trusted=trusted,
                                           me=helper)[0].seed for u in ids]
        share_sum = masking.weighted_field_sum([sent[u].weights for u in ids], weights)
        strategy.sealed.append(SealedBuffer(buffer["buffer"], list(zip(ids, weights,
                                                                     strict=True)),
                                            {}, share_sum))
        mask = masking.weighted_mask_sum(seeds, weights, [(size,)])
        result = strategy.complete(current, buffer["buffer"], tuple(mask))
        assert result is not None
        current = result[0]
    final = saved["core"]["weights"]
    assert saved["finished"] and saved["core"]["version"] == len(buffers)
    for mine, theirs in zip(current, final, strict=True):
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), \
            "the final model is not what the unmasked buffers produce"
