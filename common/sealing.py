"""End-to-end sealing of payloads: Ed25519 signatures, X25519 + ChaCha20-Poly1305 encryption.

The broker is not trusted with the contents of updates or models. A sealed message keeps its header
fields readable (routing, monitoring, dead-letter reasons) but the payload is encrypted with a fresh
random content key; that key is wrapped once per recipient with an X25519 key agreement between a
one-off ephemeral key and the recipient's public key (HKDF-SHA256 derives the wrapping key). The
sender's Ed25519 key signs the header, the ciphertext and every seal field, so changing any byte is
detected, and the header is also the AEAD's associated data.

This module works on bytes only: `common.wire` builds the canonical header bytes and calls it, the
services hold the keys (`common.identity`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.errors import DecodeError
from common.identity import Identity, raw_bytes

ALGORITHM = "fedmq-seal-1"  # X25519 + HKDF-SHA256 key wrap, ChaCha20-Poly1305, Ed25519
NONCE_BYTES = 12
KEY_BYTES = 32
WRAP_NONCE = bytes(NONCE_BYTES)  # each wrapping key is used once, so a fixed nonce is safe
SIGNED_DOMAIN = b"fedmq sealed message v1\x00"


class SealError(DecodeError):
    """A sealed message that must not be trusted; `code` labels it for metrics."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------- seals

@dataclass(frozen=True)
class Seal:
    """The seal fields a sealed message carries next to its header and payload."""

    signer: str
    nonce: bytes
    ephemeral: bytes = b""                                  # empty: payload is signed, not sealed
    keys: dict[str, bytes] = field(default_factory=dict)    # recipient -> wrapped content key
    signature: bytes = b""

    @property
    def encrypted(self) -> bool:
        return bool(self.keys)

    def to_wire(self) -> dict[str, Any]:
        return {"alg": ALGORITHM, "signer": self.signer, "nonce": self.nonce,
                "epk": self.ephemeral, "keys": dict(self.keys), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: Any) -> Seal:
        if not isinstance(obj, dict) or obj.get("alg") != ALGORITHM:
            raise SealError("bad_seal", f"seal must be a map with alg {ALGORITHM!r}")
        signer, nonce, epk, keys, sig = (obj.get(k) for k in ("signer", "nonce", "epk", "keys",
                                                                "sig"))
        if (not isinstance(signer, str) or not isinstance(nonce, bytes)
                or len(nonce) != NONCE_BYTES or not isinstance(epk, bytes)
                or not isinstance(sig, bytes) or not isinstance(keys, dict)
                or not all(isinstance(k, str) and isinstance(v, bytes)
                           for k, v in keys.items())):
            raise SealError("bad_seal", "seal fields have the wrong types or sizes")
        return cls(signer, nonce, epk, keys, sig)


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def _signed_bytes(context: bytes, payload: bytes, seal: Seal) -> bytes:
    wrapped = b"".join(_length_prefixed(name.encode(), seal.keys[name])
                       for name in sorted(seal.keys))
    return SIGNED_DOMAIN + _length_prefixed(
        ALGORITHM.encode(), context, payload, seal.signer.encode(), seal.nonce, seal.ephemeral,
        wrapped)


def _wrapping_key(shared: bytes, seal: Seal, recipient: str,
                  recipient_key: X25519PublicKey) -> bytes:
    info = b"fedmq key wrap v1" + _length_prefixed(seal.ephemeral, raw_bytes(recipient_key),
                                                   recipient.encode())
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=seal.nonce,
                info=info).derive(shared)


def seal(payload: bytes, context: bytes, signer: Identity,
         recipients: Mapping[str, X25519PublicKey] | None = None) -> tuple[bytes, Seal]:
    """Encrypt `payload` for `recipients` (if any) and sign everything; returns (payload, seal).

    `context` is the canonical header (bound as associated data and signed). With no recipients
    the payload stays in the clear and is only signed.
    """
    nonce = os.urandom(NONCE_BYTES)
    if not recipients:
        unsigned = Seal(signer.name, nonce)
        body = payload
    else:
        content_key = ChaCha20Poly1305.generate_key()
        ephemeral = X25519PrivateKey.generate()
        unsigned = Seal(signer.name, nonce, raw_bytes(ephemeral.public_key()))
        keys = {}
        for name, public in recipients.items():
            wrap = _wrapping_key(ephemeral.exchange(public), unsigned, name, public)
            keys[name] = ChaCha20Poly1305(wrap).encrypt(WRAP_NONCE, content_key, None)
        unsigned = replace(unsigned, keys=keys)
        body = ChaCha20Poly1305(content_key).encrypt(nonce, payload, context)
    signature = signer.signing_key.sign(_signed_bytes(context, body, unsigned))
    return body, replace(unsigned, signature=signature)


def verify(payload: bytes, context: bytes, seal_: Seal,
           trusted: Mapping[str, Ed25519PublicKey]) -> None:
    """Raise SealError unless a trusted signer signed exactly these bytes."""
    key = trusted.get(seal_.signer)
    if key is None:
        raise SealError("unknown_worker", f"signer {seal_.signer!r} is not registered")
    try:
        key.verify(seal_.signature, _signed_bytes(context, payload, seal_))
    except InvalidSignature:
        raise SealError("bad_signature", f"signature of {seal_.signer!r} does not match "
                        "the message") from None


def unseal(payload: bytes, context: bytes, seal_: Seal, me: Identity) -> bytes:
    """Decrypt a verified payload addressed to `me`; signed-only payloads come back as they are."""
    if not seal_.encrypted:
        return payload
    wrapped = seal_.keys.get(me.name)
    if wrapped is None:
        raise SealError("not_a_recipient", f"message is sealed for {sorted(seal_.keys)}, "
                        f"not for {me.name!r}")
    try:
        ephemeral = X25519PublicKey.from_public_bytes(seal_.ephemeral)
        wrap = _wrapping_key(me.encryption_key.exchange(ephemeral), seal_, me.name,
                             me.encryption_key.public_key())
        content_key = ChaCha20Poly1305(wrap).decrypt(WRAP_NONCE, wrapped, None)
        return ChaCha20Poly1305(content_key).decrypt(seal_.nonce, payload, context)
    except (InvalidTag, ValueError):
        raise SealError("decrypt_failed", "payload cannot be decrypted with this key") from None
