"""Who may have an update considered, before any rule of the job looks at it.

Sealed mode (the coordinator has an identity) accepts only updates signed by a registered worker
(the registry file is re-read when it changes: `fedmq keys register` while running) and rejects
replays: an update id or a nonce seen before, and an update whose signer is not the worker it
names. An update whose id was already accepted is not a replay but a redelivery (the coordinator
died before acking it): it goes on to the core as a duplicate, is never charged again, and only its
signer is checked. The nonces and ids seen are checkpointed in the same file as the accepted ids
(lifecycle.py), so after a restart both agree. With differential privacy, every update a worker
sends (local DP) counts against its epsilon budget in a `PrivacyLedger`; central DP spends from
the same ledger when a buffer is combined. Decoding is the codec's job (common/codec.py); task
ownership is the core's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common import privacy
from common.codec import Opened
from common.errors import RejectedUpdate
from common.identity import Registry
from common.messages import WeightUpdate
from common.settings import CoordinatorSettings

log = logging.getLogger("fedmq.coordinator")
REGISTRY_CHECK_SECONDS = 2.0


@dataclass
class Signers:
    """Sealed mode: the registered workers, and the nonces and update ids already received."""

    registry_path: Path
    registry: Registry = field(default_factory=Registry)
    seen_nonces: set[bytes] = field(default_factory=set)
    seen_updates: set[str] = field(default_factory=set)
    _registry_mtime: float = -1.0
    _checked_at: float = 0.0

    def refresh(self, force: bool = False) -> None:
        """Reload the registry file when it changed."""
        now = time.monotonic()
        if not force and now - self._checked_at < REGISTRY_CHECK_SECONDS:
            return
        self._checked_at = now
        mtime = self.registry_path.stat().st_mtime if self.registry_path.exists() else 0.0
        if mtime != self._registry_mtime:
            self.registry = Registry.load(self.registry_path)
            self._registry_mtime = mtime
            log.info("worker registry: %s", ", ".join(sorted(self.registry.workers)) or "empty")

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Every registered worker's signing key: whose updates may be opened."""
        self.refresh()
        return {name: key.signing for name, key in self.registry.workers.items()}

    def readers(self) -> dict[str, X25519PublicKey]:
        """Every registered worker's encryption key: who may read a global model."""
        self.refresh()
        return {name: key.encryption for name, key in self.registry.workers.items()}

    def check(self, opened: Opened[WeightUpdate]) -> None:
        """Reject a replay (nonce or update id seen before) or a signer that is not the worker
        the update names. An update already accepted never comes here (`Admission.admit`)."""
        update, seal = opened.message, opened.seal
        assert seal is not None, "a sealed coordinator's codec opens only sealed updates"
        if seal.nonce in self.seen_nonces or update.update_id in self.seen_updates:
            raise RejectedUpdate("replayed", f"update {update.update_id} (nonce "
                                 f"{seal.nonce.hex()}) was received before")
        self.seen_nonces.add(seal.nonce)
        self.seen_updates.add(update.update_id)
        self.check_identity(opened)

    @staticmethod
    def check_identity(opened: Opened[WeightUpdate]) -> None:
        """Reject an update signed by another worker than the one it names."""
        update, seal = opened.message, opened.seal
        assert seal is not None, "a sealed coordinator's codec opens only sealed updates"
        if seal.signer != update.worker_id:
            raise RejectedUpdate("identity_mismatch", f"signed by {seal.signer!r} but names "
                                 f"worker {update.worker_id!r}")

    def state(self) -> dict[str, Any]:
        return {"seen_nonces": sorted(n.hex() for n in self.seen_nonces),
                "seen_updates": sorted(self.seen_updates)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seen_nonces = {bytes.fromhex(n) for n in state["seen_nonces"]}
        self.seen_updates = set(state["seen_updates"])


@dataclass
class Admission:
    """Signer and replay checks (sealed mode) and per-worker privacy budgets (with DP)."""

    signers: Signers | None = None
    ledger: privacy.PrivacyLedger | None = None
    count_updates: bool = True  # local DP: every update a worker sends is a release

    @classmethod
    def from_settings(cls, settings: CoordinatorSettings) -> Admission:
        signers = None
        if settings.identity is not None and settings.registry is not None:
            signers = Signers(settings.registry)
            signers.refresh(force=True)
        ledger = None
        if settings.dp_noise_multiplier > 0:
            ledger = privacy.PrivacyLedger(settings.dp_noise_multiplier, settings.dp_delta,
                                           settings.dp_epsilon_budget)
        return cls(signers, ledger, settings.dp_mode == "local")

    def trusted(self) -> dict[str, Ed25519PublicKey] | None:
        """Signing keys of the workers whose updates may be opened (None: plain mode)."""
        return None if self.signers is None else self.signers.trusted()

    def readers(self) -> dict[str, X25519PublicKey] | None:
        """Who may read a global model (None: plain mode, anyone on the broker)."""
        return None if self.signers is None else self.signers.readers()

    def admit(self, opened: Opened[WeightUpdate], accepted: Container[str],
              claim: Callable[[WeightUpdate], None]) -> bool:
        """Every check before the core's: True if the update was accepted before (a
        redelivery after a crash: the core counts it as a duplicate; it is neither a replay
        nor charged again, and in sealed mode only its signer is checked). Otherwise, in this
        order: replay and signer (sealed mode), the task's single answer (`claim`, the core's),
        the worker's privacy budget (charged once per update id). Raises RejectedUpdate."""
        if opened.message.update_id in accepted:
            if self.signers is not None:
                self.signers.check_identity(opened)
            return True
        if self.signers is not None:
            self.signers.check(opened)
        claim(opened.message)
        self.charge(opened.message)
        return False

    def charge(self, update: WeightUpdate) -> None:
        """Local DP: count the update against its worker's budget; reject it past the budget."""
        if self.ledger is None or not self.count_updates:
            return
        spent = self.ledger.record(update.worker_id)
        budget = self.ledger.budget
        if budget is not None and spent > budget:
            raise RejectedUpdate("privacy_budget", f"epsilon of {update.worker_id!r} "
                                 f"would be {spent:.3f} > budget {budget}")

    def budget_stop(self, version: int) -> str | None:
        """Why the job must stop now: one more update (local DP) or buffer (central DP) of the
        busiest worker would exceed the budget. None: it may go on."""
        if self.ledger is None or (exceeding := self.ledger.next_exceeds()) is None:
            return None
        what = "update from" if self.count_updates else "buffer with an update from"
        return (f"privacy budget: one more {what} {exceeding[0]} would spend epsilon "
                f"{exceeding[1]:.3f} > budget {self.ledger.budget} (delta {self.ledger.delta}); "
                f"stopping at version {version}")

    def epsilon(self) -> float | None:
        """The largest epsilon any worker has spent so far (None without DP)."""
        return None if self.ledger is None else self.ledger.worst()[1]

    def state(self) -> dict[str, Any]:
        """Replay protection and privacy spending: kept across restarts, so a restarted
        coordinator neither accepts a replay nor forgets what a worker has spent."""
        return {"gate": None if self.signers is None else self.signers.state(),
                "releases": None if self.ledger is None else dict(self.ledger.releases)}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.signers is not None and state.get("gate") is not None:
            self.signers.load_state(state["gate"])
        if self.ledger is not None and state.get("releases") is not None:
            self.ledger.releases = Counter({k: int(v) for k, v in state["releases"].items()})
