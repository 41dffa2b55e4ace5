"""How a worker reads tasks and models and writes updates: plain, or sealed with its identity.

Sealed mode trusts only messages signed by the coordinator's key (so a forged task or model is
ignored) and seals every update to the coordinator: signed with this worker's Ed25519 key, the
weights encrypted to the coordinator's X25519 key.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import sealing, wire
from common.errors import DecodeError
from common.identity import Identity, PublicIdentity, load_identity, load_public
from common.messages import GlobalModel, TrainTask, WeightUpdate
from common.settings import WorkerSettings


@dataclass(frozen=True)
class WorkerCodec:
    max_bytes: int
    identity: Identity | None = None
    coordinator: PublicIdentity | None = None

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> WorkerCodec:
        if settings.identity is None or settings.coordinator_key is None:
            return cls(settings.max_message_bytes)
        return cls(settings.max_message_bytes, load_identity(settings.identity),
                   load_public(settings.coordinator_key))

    @property
    def sealed(self) -> bool:
        return self.identity is not None

    def _open(self, body: bytes, expect: type[TrainTask] | type[GlobalModel]) -> object:
        if self.identity is None or self.coordinator is None:
            return wire.decode(body, expect, self.max_bytes)
        try:
            message, _ = wire.decode_sealed(
                body, expect, trusted={self.coordinator.name: self.coordinator.signing},
                me=self.identity, max_bytes=self.max_bytes)
        except sealing.SealError as exc:
            raise DecodeError(exc.reason) from None
        return message

    def task(self, body: bytes) -> TrainTask:
        task = self._open(body, TrainTask)
        assert isinstance(task, TrainTask)
        return task

    def model(self, body: bytes) -> GlobalModel:
        model = self._open(body, GlobalModel)
        assert isinstance(model, GlobalModel)
        return model

    def update(self, update: WeightUpdate) -> bytes:
        if self.identity is None or self.coordinator is None:
            return wire.encode(update)
        return wire.encode_sealed(update, self.identity,
                                  {self.coordinator.name: self.coordinator.encryption})
