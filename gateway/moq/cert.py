"""Self-signed certificates for MoQ listeners, pinned by clients through their SHA-256.

`generate_certificate()` makes an ECDSA P-256 certificate (what browsers accept for
`serverCertificateHashes`: ECDSA, valid at most 14 days) for local and test use; its
`fingerprint` is the hex SHA-256 of the DER, what `moq.Client(tls_fingerprints=[...])` pins.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["MAX_PINNED_VALIDITY_DAYS", "Certificate", "generate_certificate", "load_certificate"]

MAX_PINNED_VALIDITY_DAYS: Final = 14
"""Longest validity a certificate pinned by hash may have (Chromium's WebTransport rule)."""


@dataclass(frozen=True, slots=True, eq=False)
class Certificate:
    """A certificate and its private key, as `cryptography` objects, for `MoqServer.bind`.

    `fingerprint`: lowercase hex SHA-256 of the certificate's DER encoding. The key is a
    secret: this object's repr shows the fingerprint only.
    """

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the certificate's DER."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def certificate_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write `cert.pem` and `key.pem` (mode 0600) into `directory`; returns their paths."""
        cert_path, key_path = directory / "cert.pem", directory / "key.pem"
        cert_path.write_bytes(self.certificate_pem())
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            self.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    def __repr__(self) -> str:
        return f"Certificate(fingerprint={self.fingerprint!r})"


def generate_certificate(
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), *, valid_days: int = 10
) -> Certificate:
    """A fresh self-signed ECDSA P-256 certificate for `hosts` (DNS names or IP addresses,
    all put in the SAN), valid from an hour ago for `valid_days` (1..14). Raises `ValueError`
    for no host or a validity outside 1..14 days."""
    if not hosts:
        raise ValueError("a certificate needs at least one host")
    if not 1 <= valid_days <= MAX_PINNED_VALIDITY_DAYS:
        raise ValueError(f"valid_days must be 1..{MAX_PINNED_VALIDITY_DAYS}, not {valid_days}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now - datetime.timedelta(hours=1) + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key)


def load_certificate(cert_path: Path, key_path: Path) -> Certificate:
    """Load a PEM certificate chain (leaf first) and its unencrypted EC private key. Raises
    `ValueError` for unreadable PEM or a key that is not elliptic-curve."""
    chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the MoQ listener takes an elliptic-curve (ECDSA) key")
    return Certificate(chain[0], key, tuple(chain[1:]))
