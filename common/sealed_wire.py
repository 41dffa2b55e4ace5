"""Sealed messages on the wire: an envelope whose payload is signed (and, with recipients,
encrypted) by common/sealing.py, with the seal as an extra envelope field. The seal binds the
schema, kind and sorted header too, so nothing in the clear can be changed either."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from common import identity, sealing
from common.messages import Message
from common.wire import (
    DEFAULT_MAX_BYTES,
    Envelope,
    expect_kind,
    from_envelope,
    pack_envelope,
    seal_context,
    to_envelope,
    unpack_envelope,
)

T = TypeVar("T")


def encode_sealed(message: Message, signer: identity.Identity,
                  recipients: Mapping[str, Any] | None = None) -> bytes:
    """Message to bytes, signed by `signer` and (with recipients) its payload encrypted to them.

    `recipients` maps names to X25519 public keys; None or empty signs without encrypting.
    """
    envelope = to_envelope(message)
    payload, seal = sealing.seal(envelope.payload, seal_context(envelope), signer, recipients)
    return pack_envelope(dataclasses.replace(envelope, payload=payload,
                                             extra={"seal": seal.to_wire()}))


def decode_sealed(body: bytes, expect: type[T], *, trusted: Mapping[str, Any],
                  me: identity.Identity | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[T, sealing.Seal]:
    """Bytes from the broker to a verified (and, if encrypted, decrypted) message."""
    return open_sealed(unpack_envelope(body, max_bytes), expect, trusted=trusted, me=me,
                       max_bytes=max_bytes)


def open_sealed(envelope: Envelope, expect: type[T], *, trusted: Mapping[str, Any],
                me: identity.Identity | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[T, sealing.Seal]:
    """Verify the signer against `trusted` (name -> Ed25519 public key), decrypt, decode.

    Raises SealError (unsealed, unknown signer, bad signature, not for us, undecryptable) before
    any payload byte is parsed, or DecodeError for a malformed message.
    """
    if set(envelope.extra) != {"seal"}:
        raise sealing.SealError("unsealed", "message carries no seal (or unknown outer fields)")
    seal = sealing.Seal.from_wire(envelope.extra["seal"])
    context = seal_context(envelope)
    sealing.verify(envelope.payload, context, seal, trusted)
    if seal.encrypted and me is None:
        raise sealing.SealError("not_a_recipient", "encrypted message, but no key to open it")
    payload = sealing.unseal(envelope.payload, context, seal, me) if me else envelope.payload
    message = from_envelope(dataclasses.replace(envelope, payload=payload, extra={}), max_bytes)
    return expect_kind(message, expect), seal
