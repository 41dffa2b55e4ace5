"""How a role writes and reads its messages: plain, or sealed with its identity. One place.

Plain mode is the wire format as it is (common/wire.py). Sealed mode (the role has an identity)
signs every message with the role's Ed25519 key, encrypts payloads to the named recipients'
X25519 keys, and accepts only messages signed by a key it trusts and (when encrypted) sealed to
it. A message that cannot be decoded or must not be trusted raises `DecodeError` (a `SealError`
for sealing failures, with its own code); either carries the task id the clear header names, so
nobody parses a rejected body twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common import sealed_wire, wire
from common.errors import DecodeError
from common.identity import Identity
from common.messages import Message
from common.sealing import Seal

T = TypeVar("T")


@dataclass(frozen=True)
class Opened(Generic[T]):
    """A decoded message and, in sealed mode, the seal it came with (signer, nonce)."""

    message: T
    seal: Seal | None = None


@dataclass(frozen=True)
class Codec:
    """Plain without an identity, sealed with one; bodies larger than `max_bytes` are refused
    (a whole body: --max-body-bytes; bodies travel in chunks, see common/chunks.py)."""

    max_bytes: int
    identity: Identity | None = None

    def encode(self, message: Message,
               recipients: Mapping[str, X25519PublicKey] | None = None) -> bytes:
        """Plain: the message as it is. Sealed: signed, and its payload encrypted to
        `recipients` (none: signed only, readable by anyone who can read the queue)."""
        if self.identity is None:
            return wire.encode(message)
        return sealed_wire.encode_sealed(message, self.identity, recipients)

    def encode_pieces(self, message: Message,
                      recipients: Mapping[str, X25519PublicKey] | None = None,
                      ) -> list[bytes | memoryview]:
        """`encode` as pieces whose concatenation is the body. Plain: views of the message's
        arrays, no copy (common/chunks.py sends them in chunks, never joined whole). Sealed:
        the one sealed body, whole (its payload is encrypted and signed as one)."""
        if self.identity is None:
            return wire.encode_pieces(message)
        return [self.encode(message, recipients)]

    def decode(self, body: bytes | bytearray, expect: type[T],
               trusted: Mapping[str, Ed25519PublicKey] | None = None) -> Opened[T]:
        """The message of `body`, which must be an `expect`; sealed mode accepts only signers
        in `trusted` (name -> Ed25519 key). Raises DecodeError (or its SealError) with the
        reason and, once the header is read, the task it names."""
        if self.identity is None:
            return Opened(wire.decode(body, expect, self.max_bytes))  # arrays: no copy
        envelope = wire.unpack_envelope(body, self.max_bytes)
        try:
            message, seal = sealed_wire.open_sealed(envelope, expect, trusted=trusted or {},
                                             me=self.identity, max_bytes=self.max_bytes)
            return Opened(message, seal)
        except DecodeError as exc:
            exc.task_id = envelope.task_id
            raise

    def task_of(self, body: bytes) -> str | None:
        """The task id in a message's clear header, if it has one (for bookkeeping only)."""
        try:
            return wire.unpack_envelope(body, self.max_bytes).task_id
        except DecodeError:
            return None
