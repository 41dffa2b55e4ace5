"""The order of the admission checks (issue 14, item 7): an update already accepted is a
duplicate before any replay check or privacy charge; anything else seen before is a replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.codec import Opened
from common.errors import RejectedUpdate
from common.messages import WeightUpdate
from common.privacy import PrivacyLedger
from common.sealing import Seal
from coordinator.admission import Admission, Signers
from tests.unit.test_coordinator_core import fresh_core, update_for


def sealed(update: WeightUpdate, signer: str = "w", nonce: bytes = b"n" * 12) -> Opened[
        WeightUpdate]:
    return Opened(update, Seal(signer=signer, nonce=nonce))


def admission(tmp_path: Path, sealed_mode: bool = True) -> Admission:
    signers = Signers(tmp_path / "registry.json") if sealed_mode else None
    return Admission(signers, PrivacyLedger(1.0, 1e-5, budget=None))


def releases(admit: Admission) -> int:
    assert admit.ledger is not None
    return admit.ledger.releases["w"]


def test_a_redelivered_accepted_sealed_update_is_a_duplicate_and_charged_once(
        tmp_path: Path) -> None:
    # Given a sealed update admitted, charged and accepted by the core
    core, admit = fresh_core(), admission(tmp_path)
    opened = sealed(update_for(core))
    assert admit.admit(opened, core.accepted_ids, core.claim) is False
    assert core.handle(opened.message).kind == "applied"
    # When the broker redelivers it (the coordinator died before acking it)
    duplicate = admit.admit(opened, core.accepted_ids, core.claim)
    # Then it is a duplicate, not a replay, and the worker's spending counts it once
    assert duplicate is True and core.handle(opened.message).kind == "duplicate"
    assert releases(admit) == 1 and core.duplicates == 1


def test_a_replay_of_a_rejected_or_unknown_update_stays_a_replay(tmp_path: Path) -> None:
    # Given a sealed update admitted but then rejected by the core (its task was never issued)
    core, admit = fresh_core(), admission(tmp_path)
    opened = sealed(update_for(core, task_id="never-issued"))
    admit.admit(opened, core.accepted_ids, core.claim)
    assert core.handle(opened.message).kind == "rejected"
    # When the same body comes again, or a new update reuses its nonce
    # Then both are replays, and neither is charged again
    for again in (opened, sealed(update_for(core))):
        with pytest.raises(RejectedUpdate, match="received before") as caught:
            admit.admit(again, core.accepted_ids, core.claim)
        assert caught.value.code == "replayed"
    assert releases(admit) == 1


def test_an_accepted_id_signed_by_another_worker_is_refused(tmp_path: Path) -> None:
    # Given an accepted sealed update of w
    core, admit = fresh_core(), admission(tmp_path)
    opened = sealed(update_for(core))
    admit.admit(opened, core.accepted_ids, core.claim)
    core.handle(opened.message)
    # When another signer sends an update with the same id, then it is refused
    with pytest.raises(RejectedUpdate) as caught:
        admit.admit(sealed(opened.message, signer="x", nonce=b"m" * 12), core.accepted_ids,
                    core.claim)
    assert caught.value.code == "identity_mismatch"


def test_a_redelivered_plain_update_is_not_charged_twice(tmp_path: Path) -> None:
    # Given plain mode with local DP: an update admitted and applied
    core, admit = fresh_core(), admission(tmp_path, sealed_mode=False)
    update = update_for(core)
    admit.admit(Opened(update), core.accepted_ids, core.claim)
    core.handle(update)
    # When it is redelivered, then it is a duplicate and the worker's spending counts it once
    assert admit.admit(Opened(update), core.accepted_ids, core.claim) is True
    assert releases(admit) == 1


def test_replay_state_and_accepted_ids_survive_a_restart_together(tmp_path: Path) -> None:
    # Given an accepted update and a rejected one, checkpointed (admission and core state)
    core, admit = fresh_core(), admission(tmp_path)
    accepted = sealed(update_for(core), nonce=b"a" * 12)
    rejected = sealed(update_for(core, task_id="never-issued"), nonce=b"b" * 12)
    for opened in (accepted, rejected):
        admit.admit(opened, core.accepted_ids, core.claim)
        core.handle(opened.message)
    saved = json.loads(json.dumps(admit.state()))
    # When both are loaded into a fresh coordinator
    fresh_admit, fresh = admission(tmp_path), fresh_core()
    fresh_admit.load_state(saved)
    fresh.accepted_ids = dict(core.accepted_ids)
    # Then the accepted update is a duplicate, the rejected one a replay, and nothing is charged
    assert fresh_admit.admit(accepted, fresh.accepted_ids, fresh.claim) is True
    with pytest.raises(RejectedUpdate, match="received before"):
        fresh_admit.admit(rejected, fresh.accepted_ids, fresh.claim)
    assert releases(fresh_admit) == 2
