"""Sealing without a broker: round trips, tampering, unknown signers, recipients, the registry,
and the coordinator's sealed-mode checks (replays, signer, task ownership)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from common import identity, sealed_wire, sealing, wire
from common.codec import Codec
from common.errors import ConfigError, DecodeError, RejectedUpdate
from common.messages import GlobalModel, TrainTask, WeightUpdate
from coordinator.admission import Admission, Signers
from coordinator.core import CoordinatorCore
from coordinator.strategies import FedAsync, staleness_constant
from fedmq.cli import main

COORDINATOR = identity.Identity.generate("coordinator")
W0 = identity.Identity.generate("w0")
W1 = identity.Identity.generate("w1")
TRUSTED = {"w0": W0.public().signing, "w1": W1.public().signing}


def update(worker: str = "w0", task: str = "task-1", **changes: object) -> WeightUpdate:
    base = WeightUpdate(update_id=f"u-{np.random.randint(1 << 30)}", worker_id=worker,
                        task_id=task, base_version=0, num_examples=10, train_seconds=0.1,
                        weights=(np.arange(12, dtype=np.float32).reshape(3, 4),),
                        metrics={"loss": 0.5})
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def sealed(message: WeightUpdate, signer: identity.Identity = W0) -> bytes:
    return sealed_wire.encode_sealed(message, signer,
                                     {"coordinator": COORDINATOR.public().encryption})


def test_a_sealed_update_opens_for_the_coordinator_only() -> None:
    # Given an update sealed by w0 for the coordinator
    original = update()
    body = sealed(original)
    # When the coordinator opens it, then it gets the same update back
    opened, seal = sealed_wire.decode_sealed(body, WeightUpdate, trusted=TRUSTED, me=COORDINATOR)
    assert opened.weights[0].tobytes() == original.weights[0].tobytes()
    assert opened.metrics == original.metrics and seal.signer == "w0"
    # And nobody else can: not another worker, not the plain codec
    with pytest.raises(sealing.SealError, match="not_a_recipient"):
        sealed_wire.decode_sealed(body, WeightUpdate, trusted=TRUSTED, me=W1)
    with pytest.raises(DecodeError):
        wire.decode(body)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_flipping_any_byte_of_a_sealed_update_is_detected(data: st.DataObject) -> None:
    # Given a sealed update with one bit of one byte flipped, anywhere
    body = bytearray(sealed(update()))
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] ^= 1 << data.draw(st.integers(0, 7))
    # When the coordinator opens it, then it refuses (seal error or undecodable), never accepts
    with pytest.raises((sealing.SealError, DecodeError)):
        sealed_wire.decode_sealed(bytes(body), WeightUpdate, trusted=TRUSTED, me=COORDINATOR)


def test_an_unregistered_signer_and_a_forged_name_are_refused() -> None:
    rogue = identity.Identity.generate("rogue")
    with pytest.raises(sealing.SealError, match="unknown_worker"):
        sealed_wire.decode_sealed(sealed(update("rogue"), rogue), WeightUpdate, trusted=TRUSTED,
                           me=COORDINATOR)
    impostor = dataclasses.replace(rogue, name="w0")
    with pytest.raises(sealing.SealError, match="bad_signature"):
        sealed_wire.decode_sealed(sealed(update(), impostor), WeightUpdate, trusted=TRUSTED,
                           me=COORDINATOR)


def test_signed_tasks_and_sealed_models_for_many_workers() -> None:
    task = TrainTask(task_id="t", job="j", min_version=0)
    body = sealed_wire.encode_sealed(task, COORDINATOR)
    trusted = {"coordinator": COORDINATOR.public().signing}
    assert sealed_wire.decode_sealed(body, TrainTask, trusted=trusted)[0] == task
    model = GlobalModel(version=3, fingerprint="f", weights=(np.ones(5, np.float32),))
    recipients = {w.name: w.public().encryption for w in (W0, W1)}
    body = sealed_wire.encode_sealed(model, COORDINATOR, recipients)
    for worker in (W0, W1):
        opened, _ = sealed_wire.decode_sealed(body, GlobalModel, trusted=trusted, me=worker)
        assert opened.version == 3 and opened.weights[0].sum() == 5


def test_an_unsealed_message_is_refused_in_sealed_mode() -> None:
    with pytest.raises(sealing.SealError, match="unsealed"):
        sealed_wire.decode_sealed(wire.encode(update()), WeightUpdate, trusted=TRUSTED,
                                  me=COORDINATOR)


@dataclasses.dataclass
class SealedCoordinator:
    """The checks a sealed coordinator makes before its core validates an update, in the order
    coordinator/receiving.py makes them: codec, signer and replay, task ownership."""

    codec: Codec
    admission: Admission
    core: CoordinatorCore

    def open_update(self, body: bytes) -> WeightUpdate:
        opened = self.codec.decode(body, WeightUpdate, self.admission.trusted())
        self.admission.admit(opened, self.core.accepted_ids, self.core.claim)
        return opened.message


def gate(tmp_path: Path, issued: set[str]) -> SealedCoordinator:
    registry = identity.Registry()
    for worker in (W0, W1):
        registry.add(worker.public())
    registry.save(tmp_path / "reg.json")
    signers = Signers(tmp_path / "reg.json")
    signers.refresh(force=True)
    core = CoordinatorCore(weights=[np.zeros((3, 4), np.float32)],
                           strategy=FedAsync(0.5, staleness_constant),
                           max_staleness=5, training=None, bind_tasks=True)  # type: ignore[arg-type]
    core.issued = set(issued)
    return SealedCoordinator(Codec(1 << 20, COORDINATOR), Admission(signers), core)


def test_the_gate_rejects_replays_by_nonce_and_by_update_id(tmp_path: Path) -> None:
    the_gate = gate(tmp_path, {"task-1", "task-2"})
    original = update()
    body = sealed(original)
    assert the_gate.open_update(body).update_id == original.update_id
    with pytest.raises(RejectedUpdate, match="replayed"):
        the_gate.open_update(body)        # same bytes, same nonce
    with pytest.raises(RejectedUpdate, match="replayed"):
        the_gate.open_update(sealed(original))  # re-sealed, same update id


def test_the_gate_binds_a_task_to_the_first_worker_that_answers_it(tmp_path: Path) -> None:
    # (a task is bound when an update for it is accepted: issue 14 item 2)
    the_gate = gate(tmp_path, {"task-1"})
    assert the_gate.core.handle(the_gate.open_update(sealed(update("w0")))).kind == "applied"
    with pytest.raises(RejectedUpdate, match="task_not_issued_to_worker"):
        the_gate.open_update(sealed(update("w1"), W1))
    with pytest.raises(RejectedUpdate, match="task_already_answered"):
        the_gate.open_update(sealed(update("w0")))
    with pytest.raises(RejectedUpdate, match="identity_mismatch"):
        the_gate.open_update(sealed(update("w1", task="task-9"), W0))


def test_keys_cli_generates_registers_and_revokes(tmp_path: Path) -> None:
    runner = CliRunner()
    keys, registry = tmp_path / "keys", tmp_path / "keys" / "reg.json"
    assert runner.invoke(main, ["keys", "generate", "w7", "--dir", str(keys)]).exit_code == 0
    assert (keys / "w7.key").stat().st_mode & 0o077 == 0  # private key: owner only
    again = runner.invoke(main, ["keys", "generate", "w7", "--dir", str(keys)])
    assert again.exit_code != 0 and "already exists" in again.output
    result = runner.invoke(main, ["keys", "register", str(keys / "w7.pub"), "--registry",
                                  str(registry)])
    assert result.exit_code == 0, result.output
    assert list(identity.Registry.load(registry).workers) == ["w7"]
    listed = runner.invoke(main, ["keys", "list", "--registry", str(registry)])
    assert identity.load_public(keys / "w7.pub").fingerprint in listed.output
    assert runner.invoke(main, ["keys", "revoke", "w7", "--registry", str(registry)]).exit_code \
        == 0
    assert identity.Registry.load(registry).workers == {}


def test_registering_another_key_under_a_known_name_needs_replace() -> None:
    registry = identity.Registry()
    registry.add(W0.public())
    other = identity.Identity.generate("w0").public()
    with pytest.raises(ConfigError, match="--replace"):
        registry.add(other)
    registry.add(other, replace_existing=True)
    assert registry.workers["w0"].fingerprint == other.fingerprint
