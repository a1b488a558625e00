"""DICOM TLS: contexts of the Non-downgrading BCP 195 profile, and who a certificate proves.

PS3.15 B.10 (Non-downgrading BCP 195 TLS Secure Transport Connection
Profile): TLS 1.2 or newer, never an older version; TLS 1.2 cipher suites
with forward secrecy and AES-GCM only (RFC 7525 4.2), TLS 1.3 with
OpenSSL's defaults (AES-GCM, ChaCha20-Poly1305); no compression, no
renegotiation. Both ends authenticate: the gateway requires a client
certificate signed by one of ``TELECONSULT_DICOM_TLS_CA_CERTIFICATES`` and
presents its own when it connects to a TLS peer.

A trusted certificate only says "someone our CAs vouch for". Which peer it
is comes from the peer's ``tls_certificate_sha256`` / ``tls_common_name``
(``teleconsult.config.DicomPeer``): the association policy in ``ae.py``
accepts a calling AE title over TLS only when the presented certificate is
that peer's, and the same identity is checked when we connect to the peer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from teleconsult.config import DicomPeer, Settings
from teleconsult.errors import TeleconsultError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "BCP195_TLS12_CIPHERS",
    "ClientTls",
    "PeerCertificate",
    "certificate_of",
    "handshake",
    "identity_mismatch",
    "peers_proved_by",
    "server_context",
]

logger = logging.getLogger(__name__)

# RFC 7525 4.2, the suites PS3.15 B.10 names (DCMTK's +py offers the four RSA
# ones), plus their ECDSA forms for ECDSA certificates (PS3.15 B.11).
BCP195_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ]
)


# RFC 7919 ffdhe2048, the group the DHE-RSA suites use when we serve them
# (Python offers no automatic DH group; ``openssl genpkey -genparam
# -algorithm DH -pkeyopt group:ffdhe2048`` prints the same).
_FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


def _load_dh_group(context: ssl.SSLContext) -> None:
    handle, path = tempfile.mkstemp(prefix="teleconsult-ffdhe2048-", suffix=".pem")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(_FFDHE2048)
        context.load_dh_params(path)
    finally:
        os.unlink(path)


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load(context: ssl.SSLContext, settings: Settings) -> ssl.SSLContext:
    """Our certificate and key, and the CAs we trust; an error names the setting to fix."""
    certificate = settings.dicom_tls_certificate
    key = settings.dicom_tls_private_key
    cas = settings.dicom_tls_ca_certificates
    if certificate is None or key is None or cas is None:
        raise TeleconsultError(
            "DICOM TLS needs TELECONSULT_DICOM_TLS_CERTIFICATE, TELECONSULT_DICOM_TLS_PRIVATE_KEY and "
            "TELECONSULT_DICOM_TLS_CA_CERTIFICATES"
        )
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise TeleconsultError(
            f"cannot load TELECONSULT_DICOM_TLS_CERTIFICATE {str(certificate)!r} with "
            f"TELECONSULT_DICOM_TLS_PRIVATE_KEY {str(key)!r} ({exc}): both must be PEM, the key "
            "unencrypted and the one of that certificate"
        ) from exc
    try:
        context.load_verify_locations(cafile=cas)
    except (OSError, ssl.SSLError) as exc:
        raise TeleconsultError(
            f"cannot load TELECONSULT_DICOM_TLS_CA_CERTIFICATES {str(cas)!r} ({exc}): it must hold "
            "PEM CA certificates"
        ) from exc
    return context


def server_context(settings: Settings) -> ssl.SSLContext:
    """The TLS port's context: our certificate, and a client certificate required."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_dh_group(context)
    return _load(context, settings)


@dataclass(frozen=True)
class PeerCertificate:
    """The certificate the other end of a TLS connection presented (verified by then)."""

    sha256: str  # AB:CD:... as openssl prints it
    common_name: str | None
    subject: str

    def describe(self) -> str:
        return f"{self.subject or 'no subject'}, SHA-256 {self.sha256}"


_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


def _subject(info: dict[str, Any]) -> tuple[str, str | None]:
    """The subject as ``O=…,CN=…`` (the order of the certificate), and its common name."""
    parts: list[str] = []
    common_name = None
    for rdn in info.get("subject", ()):
        for name, value in rdn:
            parts.append(f"{_SHORT_NAMES.get(name, name)}={value}")
            if name == "commonName":
                common_name = str(value)
    return ",".join(parts), common_name


def certificate_of(sock: object) -> PeerCertificate | None:
    """The peer's certificate on a TLS socket; None for a plain one (or one without a certificate)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    digest = hashlib.sha256(der).hexdigest().upper()
    subject, common_name = _subject(sock.getpeercert() or {})
    return PeerCertificate(
        sha256=":".join(digest[i : i + 2] for i in range(0, 64, 2)),
        common_name=common_name,
        subject=subject,
    )


def identity_mismatch(peer: DicomPeer, certificate: PeerCertificate) -> str | None:
    """None when the certificate proves it is ``peer``, else why it does not.

    Every identity the peer is configured with must hold: a listed
    fingerprint, and the common name when one is set.
    """
    if not peer.tls_identity_configured:
        return (
            f"peer {peer.ae_title} has neither tls_certificate_sha256 nor tls_common_name, "
            "so no certificate proves its identity"
        )
    problems = []
    if peer.tls_certificate_sha256 and certificate.sha256 not in peer.tls_certificate_sha256:
        problems.append(f"its SHA-256 fingerprint is not listed for peer {peer.ae_title}")
    if peer.tls_common_name is not None and certificate.common_name != peer.tls_common_name:
        problems.append(f"its common name is not {peer.tls_common_name!r}")
    return "; ".join(problems) or None


def peers_proved_by(peers: Iterable[DicomPeer], certificate: PeerCertificate) -> list[DicomPeer]:
    """The configured peers whose identity this certificate proves (to name an impostor's owner)."""
    return [
        peer
        for peer in peers
        if peer.tls_identity_configured and identity_mismatch(peer, certificate) is None
    ]


class _PeerContext(ssl.SSLContext):
    """A client context that also checks, once connected, that the server is the peer we called."""

    peer: DicomPeer | None = None


class _PeerCheckingSocket(ssl.SSLSocket):
    def connect(self, address: Any) -> None:
        super().connect(address)
        peer = getattr(self.context, "peer", None)
        if peer is None or not peer.tls_identity_configured:
            return
        certificate = certificate_of(self)
        mismatch = (
            "it presented no certificate" if certificate is None else identity_mismatch(peer, certificate)
        )
        if mismatch is not None:
            # An OSError: pynetdicom reports the connection as failed.
            raise ssl.SSLError(
                f"{peer.ae_title} at {peer.host}:{peer.port} presented a certificate that is not "
                f"the peer's ({certificate.describe() if certificate else 'none'}): {mismatch}"
            )


class ClientTls:
    """TLS for the associations we open: ``tls_args(peer)`` for ``AE.associate``.

    One context per TLS peer, made on first use (or ``check()`` at start-up,
    so a bad certificate stops start-up rather than every forward).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def check(self) -> None:
        """Build every TLS peer's context now: raises TeleconsultError on unusable files."""
        for peer in self.settings.dicom_peers:
            if peer.tls:
                self._context(peer)

    def tls_args(self, peer: DicomPeer) -> tuple[ssl.SSLContext, str] | None:
        """``(context, server name)`` for a TLS peer, None for a plain one."""
        if not peer.tls:
            return None
        return self._context(peer), peer.tls_server_name or peer.host

    def _context(self, peer: DicomPeer) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(peer.ae_title)
            if context is None:
                context = _profile(_PeerContext(ssl.PROTOCOL_TLS_CLIENT))
                context.check_hostname = True
                _load(context, self.settings)
                assert isinstance(context, _PeerContext)
                context.peer = peer
                context.sslsocket_class = _PeerCheckingSocket
                self._contexts[peer.ae_title] = context
            return context


# What the OpenSSL reasons mean for a DICOM TLS port.
_HINTS = {
    "WRONG_VERSION_NUMBER": "not TLS: a plain DICOM client on the TLS port?",
    "HTTP_REQUEST": "an HTTP request on the DICOM TLS port",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate; DICOM TLS here needs one",
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions below 1.2",
    "NO_SHARED_CIPHER": "no BCP 195 cipher suite in common",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no BCP 195 cipher suite in common",
}


def handshake(
    sock: ssl.SSLSocket,
    timeout: float,
    address: str,
    on_refused: Callable[[str, str], None] | None = None,
) -> bool:
    """Complete a server-side handshake within ``timeout``; False (logged, maybe audited) if it failed.

    Certificate and protocol failures are refusals (``on_refused(address,
    reason)``: the audit trail); a connection closed or silent before the
    handshake (port scans, load balancer probes) is only logged.
    """
    try:
        sock.settimeout(timeout)
        sock.do_handshake()
        sock.settimeout(None)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, TimeoutError) as exc:
        logger.info("TLS connection from %s closed before the handshake completed: %s", address, exc)
        return False
    except ssl.SSLError as exc:
        reason = f"TLS handshake failed: {exc.reason or exc}"
        if exc.reason in _HINTS:
            reason += f" ({_HINTS[exc.reason]})"
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"TLS handshake failed: client certificate not trusted ({exc.verify_message})"
        logger.warning("refused TLS connection from %s: %s", address, reason)
        if on_refused is not None:
            try:
                on_refused(address, reason)
            except Exception:
                logger.exception("could not record the refused TLS connection from %s", address)
        return False
    except OSError as exc:
        logger.info("TLS connection from %s failed before the handshake completed: %s", address, exc)
        return False
    return True
