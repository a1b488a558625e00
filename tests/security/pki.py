"""A throw-away PKI for TLS tests: CAs and certificates written as PEM files.

RSA keys: DCMTK's Non-downgrading BCP 195 profile (``+py``) offers only the
ECDHE-RSA and DHE-RSA AES-GCM suites in TLS 1.2.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "Issued", "make_authority"]


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Issued:
    """A leaf certificate and its key, as files."""

    certificate: Path
    key: Path
    sha256: str  # AB:CD:… as `openssl x509 -noout -fingerprint -sha256` prints it


@dataclass(frozen=True)
class Authority:
    """A CA that issues leaf certificates into ``folder``."""

    name: str
    folder: Path
    certificate: Path
    _key: rsa.RSAPrivateKey
    _cert: x509.Certificate

    def issue(self, common_name: str, organisation: str = "Teleconsult test") -> Issued:
        """A certificate for client and server use, valid for 127.0.0.1 and localhost."""
        key = _key()
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organisation))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = self.folder / f"{self.name}-{common_name}"
        certificate = stem.with_suffix(".crt.pem")
        certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
        return Issued(
            certificate=certificate,
            key=_write_key(key, stem.with_suffix(".key.pem")),
            sha256=":".join(digest[i : i + 2] for i in range(0, 64, 2)),
        )


def make_authority(folder: Path, name: str) -> Authority:
    key = _key()
    now = datetime.now(UTC)
    subject = _name(f"{name} root CA", "Teleconsult test")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    certificate = folder / f"{name}-ca.pem"
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name=name, folder=folder, certificate=certificate, _key=key, _cert=cert)
