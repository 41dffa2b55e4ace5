"""Participants' keys: identities (Ed25519 to sign, X25519 to receive sealed payloads), their
public halves, and the coordinator's registry of admitted workers, stored as small JSON files
(private ones with mode 0600). `common.sealing` uses them to seal and open messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from common.errors import ConfigError


def raw_bytes(key: Any) -> bytes:
    """The raw 32 bytes of an Ed25519 / X25519 key, private or public."""
    from cryptography.hazmat.primitives import serialization as s

    if isinstance(key, Ed25519PrivateKey | X25519PrivateKey):
        return key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
    return bytes(key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    """Inverse of `_b64`; binascii.Error (a ValueError) on anything that is not strict base64."""
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class PublicIdentity:
    """What others need to know about a participant: its name and two public keys."""

    name: str
    signing: Ed25519PublicKey
    encryption: X25519PublicKey

    @property
    def fingerprint(self) -> str:
        """A short hash of both public keys, to compare out of band before registering."""
        return hashlib.sha256(raw_bytes(self.signing) + raw_bytes(self.encryption)).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return {"fedmq_public_identity": 1, "name": self.name,
                "signing_public": _b64(raw_bytes(self.signing)),
                "encryption_public": _b64(raw_bytes(self.encryption)),
                "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PublicIdentity:
        try:
            identity = cls(name=str(obj["name"]),
                           signing=Ed25519PublicKey.from_public_bytes(
                               _unb64(obj["signing_public"])),
                           encryption=X25519PublicKey.from_public_bytes(
                               _unb64(obj["encryption_public"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where} is not a fedmq public identity: {exc}") from None
        if "fingerprint" in obj and obj["fingerprint"] != identity.fingerprint:
            raise ConfigError(f"{where}: fingerprint does not match its keys")
        return identity


@dataclass(frozen=True)
class Identity:
    """A participant's private keys: Ed25519 to sign, X25519 to receive sealed payloads."""

    name: str
    signing_key: Ed25519PrivateKey
    encryption_key: X25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Identity:
        if not name or any(c.isspace() for c in name) or "/" in name:
            raise ConfigError(f"identity name {name!r} must be non-empty, without spaces or '/'")
        return cls(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def public(self) -> PublicIdentity:
        return PublicIdentity(self.name, self.signing_key.public_key(),
                              self.encryption_key.public_key())

    def to_json(self) -> dict[str, Any]:
        return {"fedmq_identity": 1, "name": self.name,
                "signing_private": _b64(raw_bytes(self.signing_key)),
                "encryption_private": _b64(raw_bytes(self.encryption_key))}


def save_identity(identity: Identity, directory: Path) -> tuple[Path, Path]:
    """Write NAME.key (private, mode 0600) and NAME.pub; refuses to overwrite a key."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{identity.name}.key", directory / f"{identity.name}.pub"
    if private.exists():
        raise ConfigError(f"{private} already exists; remove it first to make a new key")
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(identity.to_json(), handle, indent=2)
    public.write_text(json.dumps(identity.public().to_json(), indent=2) + "\n")
    return private, public


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def load_identity(path: Path) -> Identity:
    obj = _read_json(path, "identity")
    try:
        return Identity(name=str(obj["name"]),
                        signing_key=Ed25519PrivateKey.from_private_bytes(
                            _unb64(obj["signing_private"])),
                        encryption_key=X25519PrivateKey.from_private_bytes(
                            _unb64(obj["encryption_private"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a fedmq private identity: {exc}") from None


def load_public(path: Path) -> PublicIdentity:
    return PublicIdentity.from_json(_read_json(path, "public identity"), str(path))


@dataclass
class Registry:
    """The coordinator's list of admitted workers: name -> public identity (a JSON file)."""

    workers: dict[str, PublicIdentity] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Registry:
        if not Path(path).exists():
            return cls()
        obj = _read_json(path, "registry")
        if not isinstance(obj, dict) or not isinstance(obj.get("workers"), list):
            raise ConfigError(f"{path} is not a fedmq worker registry")
        entries = [PublicIdentity.from_json(e, f"{path} entry") for e in obj["workers"]]
        return cls({e.name: e for e in entries})

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        body = {"fedmq_registry": 1, "workers": [self.workers[n].to_json()
                                                 for n in sorted(self.workers)]}
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, path)

    def add(self, identity: PublicIdentity, replace_existing: bool = False) -> None:
        known = self.workers.get(identity.name)
        if known is not None and known.fingerprint != identity.fingerprint \
                and not replace_existing:
            raise ConfigError(f"worker {identity.name!r} is registered with another key "
                              f"({known.fingerprint}); use --replace to rotate it")
        self.workers[identity.name] = identity

    def remove(self, name: str) -> None:
        if self.workers.pop(name, None) is None:
            raise ConfigError(f"worker {name!r} is not registered")
