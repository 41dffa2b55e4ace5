"""Certificates for TLS to the broker, made with the `cryptography` package: a small certificate
authority that issues a server certificate for the broker and client certificates for fedmq's
services, written as PEM files. Used by `fedmq tls generate` (the compose TLS deployment) and by
the TLS tests (throwaway CAs)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_HOSTS = ("localhost", "127.0.0.1")
# What docker-compose.tls.yml mounts: the broker's pair, and one client pair per fedmq service.
COMPOSE_HOSTS = ("rabbitmq", *LOCAL_HOSTS)
COMPOSE_CLIENTS = ("coordinator", "worker", "monitor")
BROKER = "broker"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, mode: int) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(path, mode)  # whatever the umask


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates into `directory`.

    The CA's own private key stays in memory: it is never written, so a CA made here can issue
    only while this object lives. `key_mode` is the file mode of the issued private keys.
    """

    def __init__(self, directory: Path, name: str = "fedmq test CA", days: int = 1,
                 cert_name: str | None = None, key_mode: int = 0o600) -> None:
        self.directory, self.days, self.key_mode = directory, days, key_mode
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (self._builder(_name(name), self.key.public_key())
                     .issuer_name(_name(name))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_file = directory / (cert_name or f"{name.replace(' ', '_')}.pem")
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name,
                 public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=self.days)))

    def issue(self, common_name: str, *, server: bool,
              hosts: Iterable[str] = LOCAL_HOSTS) -> Pair:
        """A key and a certificate for `common_name`; a server certificate names `hosts` (DNS
        names or IP addresses) as subject alternative names, which clients check."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (self._builder(_name(common_name), key.public_key())
                   .issuer_name(self.cert.subject)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [_alternative_name(h) for h in hosts]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key, self.key_mode)
        return pair


def generate_deployment(directory: Path, hosts: Sequence[str] = COMPOSE_HOSTS,
                        clients: Sequence[str] = COMPOSE_CLIENTS, days: int = 365,
                        key_mode: int = 0o600) -> dict[str, Pair]:
    """ca.pem, broker.crt/.key for `hosts`, and NAME.crt/.key for every client name: the files
    docker-compose.tls.yml mounts. Returns name -> pair (the broker's under "broker")."""
    if BROKER in clients:
        raise ValueError(f"{BROKER!r} is the broker's certificate; pick another client name")
    ca = CertificateAuthority(directory, "fedmq CA", days=days, cert_name="ca.pem",
                              key_mode=key_mode)
    pairs = {BROKER: ca.issue(BROKER, server=True, hosts=hosts)}
    for client in clients:
        pairs[client] = ca.issue(client, server=False)
    return pairs
