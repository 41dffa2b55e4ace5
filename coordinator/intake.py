"""What stands between the updates queue and `CoordinatorCore`; how outgoing messages are sealed.

Plain mode decodes updates with `wire.decode`. Sealed mode (the coordinator has an identity)
accepts only updates signed by a registered worker and sealed to this coordinator, rejects replays
(an update id or a nonce seen before) and binds each task to the first registered worker that
answers it: a task is taken from a shared queue, so the coordinator cannot know its worker when it
issues it; the first authentic update naming the task claims it, and any later update for that
task is rejected (`task_not_issued_to_worker` from another worker, `task_already_answered` from
the same one). With local differential privacy on, every update a worker sends is counted in a
`PrivacyLedger` and updates beyond the epsilon budget are rejected.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common import privacy, sealing, wire
from common.errors import DecodeError, RejectedUpdate
from common.identity import Identity, Registry, load_identity
from common.messages import GlobalModel, TrainTask, WeightUpdate
from common.settings import CoordinatorSettings

log = logging.getLogger("fedmq.coordinator")
REGISTRY_CHECK_SECONDS = 2.0


@dataclass
class SealedGate:
    """Sealed-mode checks: signer, recipient, replay, task ownership."""

    identity: Identity
    registry_path: Path
    registry: Registry = field(default_factory=Registry)
    seen_nonces: set[bytes] = field(default_factory=set)
    seen_updates: set[str] = field(default_factory=set)
    task_owner: dict[str, str] = field(default_factory=dict)
    _registry_mtime: float = -1.0
    _checked_at: float = 0.0

    def refresh_registry(self, force: bool = False) -> None:
        """Reload the registry file when it changed (`fedmq keys register` while running)."""
        now = time.monotonic()
        if not force and now - self._checked_at < REGISTRY_CHECK_SECONDS:
            return
        self._checked_at = now
        mtime = self.registry_path.stat().st_mtime if self.registry_path.exists() else 0.0
        if mtime != self._registry_mtime:
            self.registry = Registry.load(self.registry_path)
            self._registry_mtime = mtime
            log.info("worker registry: %s", ", ".join(sorted(self.registry.workers)) or "empty")

    def open_update(self, body: bytes, issued: set[str] | dict[str, float],
                    max_bytes: int) -> WeightUpdate:
        """The verified, decrypted update, or RejectedUpdate / DecodeError with the reason."""
        self.refresh_registry()
        trusted = {name: key.signing for name, key in self.registry.workers.items()}
        try:
            update, seal = wire.decode_sealed(body, WeightUpdate, trusted=trusted,
                                              me=self.identity, max_bytes=max_bytes)
        except sealing.SealError as exc:
            raise RejectedUpdate(exc.code, exc.detail) from None
        if seal.nonce in self.seen_nonces or update.update_id in self.seen_updates:
            raise RejectedUpdate("replayed", f"update {update.update_id} (nonce "
                                 f"{seal.nonce.hex()}) was received before")
        self.seen_nonces.add(seal.nonce)
        self.seen_updates.add(update.update_id)
        if seal.signer != update.worker_id:
            raise RejectedUpdate("identity_mismatch", f"signed by {seal.signer!r} but names "
                                 f"worker {update.worker_id!r}")
        owner = self.task_owner.get(update.task_id)
        if owner is not None and owner != update.worker_id:
            raise RejectedUpdate("task_not_issued_to_worker", f"task {update.task_id} went to "
                                 f"{owner!r}, not {update.worker_id!r}")
        if owner is not None:
            raise RejectedUpdate("task_already_answered",
                                 f"{owner!r} already answered task {update.task_id}")
        if update.task_id in issued:  # never-issued tasks are rejected by the core
            self.task_owner[update.task_id] = update.worker_id
        return update

    def state(self) -> dict[str, Any]:
        return {"seen_nonces": sorted(n.hex() for n in self.seen_nonces),
                "seen_updates": sorted(self.seen_updates), "task_owner": dict(self.task_owner)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seen_nonces = {bytes.fromhex(n) for n in state["seen_nonces"]}
        self.seen_updates = set(state["seen_updates"])
        self.task_owner = dict(state["task_owner"])

    def recipients(self) -> dict[str, X25519PublicKey]:
        """Every registered worker's encryption key: who may read a global model."""
        self.refresh_registry()
        return {name: key.encryption for name, key in self.registry.workers.items()}


@dataclass
class Intake:
    """Decoding of incoming updates and encoding of outgoing tasks and models, by mode."""

    max_bytes: int
    gate: SealedGate | None = None
    ledger: privacy.PrivacyLedger | None = None
    count_updates: bool = True  # local DP: every update a worker sends is a release

    @classmethod
    def from_settings(cls, settings: CoordinatorSettings) -> Intake:
        gate = None
        if settings.identity is not None and settings.registry is not None:
            gate = SealedGate(load_identity(settings.identity), settings.registry)
            gate.refresh_registry(force=True)
        ledger = None
        if settings.dp_noise_multiplier > 0:
            ledger = privacy.PrivacyLedger(settings.dp_noise_multiplier, settings.dp_delta,
                                           settings.dp_epsilon_budget)
        return cls(settings.max_message_bytes, gate, ledger, settings.dp_mode == "local")

    def open_update(self, body: bytes, issued: set[str] | dict[str, float]) -> WeightUpdate:
        """Decode (and in sealed mode authenticate) an update; count it against its worker's
        privacy budget. Raises DecodeError or RejectedUpdate."""
        if self.gate is None:
            update = wire.decode(body, WeightUpdate, self.max_bytes)
        else:
            update = self.gate.open_update(body, issued, self.max_bytes)
        if self.ledger is not None and self.count_updates:
            spent = self.ledger.record(update.worker_id)
            budget = self.ledger.budget
            if budget is not None and spent > budget:
                raise RejectedUpdate("privacy_budget", f"epsilon of {update.worker_id!r} "
                                     f"would be {spent:.3f} > budget {budget}")
        return update

    @staticmethod
    def task_of(body: bytes) -> str | None:
        """The task id in a message's clear header, if it has one (for bookkeeping only)."""
        try:
            task_id = wire.unpack_envelope(body).header.get("task_id")
        except DecodeError:
            return None
        return task_id if isinstance(task_id, str) else None

    def encode_task(self, task: TrainTask) -> bytes:
        if self.gate is None:
            return wire.encode(task)
        return wire.encode_sealed(task, self.gate.identity)

    def encode_model(self, model: GlobalModel) -> bytes:
        if self.gate is None:
            return wire.encode(model)
        return wire.encode_sealed(model, self.gate.identity, self.gate.recipients())

    def state(self) -> dict[str, Any]:
        """Replay protection, task ownership and privacy spending: kept across restarts, so a
        restarted coordinator neither accepts a replay nor forgets what a worker has spent."""
        return {"gate": None if self.gate is None else self.gate.state(),
                "releases": None if self.ledger is None else dict(self.ledger.releases)}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.gate is not None and state.get("gate") is not None:
            self.gate.load_state(state["gate"])
        if self.ledger is not None and state.get("releases") is not None:
            self.ledger.releases = Counter({k: int(v) for k, v in state["releases"].items()})

    def epsilon(self) -> float | None:
        """The largest epsilon any worker has spent so far (None without DP)."""
        return None if self.ledger is None else self.ledger.worst()[1]
