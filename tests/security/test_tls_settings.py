"""DICOM TLS settings, the BCP 195 context and the certificate-to-peer mapping, without a network."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dicom_gateway.tls import (
    BCP195_TLS12_CIPHERS,
    ClientTls,
    PeerCertificate,
    identity_mismatch,
    peers_proved_by,
    server_context,
)
from teleconsult.config import DicomPeer, Settings, normalise_fingerprint
from teleconsult.errors import TeleconsultError
from tests.security.conftest import Pki

FINGERPRINT = ":".join(["AB"] * 32)


def _peer(ae_title: str = "TOWNUS", organisation: str = "TOWN01", **tls: Any) -> dict[str, Any]:
    return {"ae_title": ae_title, "host": "127.0.0.1", "port": 104, "organisation": organisation, **tls}


def _tls_files(pki: Pki) -> dict[str, Any]:
    return {
        "dicom_tls_certificate": pki.gateway.certificate,
        "dicom_tls_private_key": pki.gateway.key,
        "dicom_tls_ca_certificates": pki.ca.certificate,
    }


@pytest.mark.parametrize(
    "written",
    [
        "sha256 Fingerprint=" + FINGERPRINT,  # the whole line openssl prints
        "SHA256 Fingerprint=" + FINGERPRINT.lower(),
        FINGERPRINT.replace(":", ""),
        FINGERPRINT.replace(":", " "),
    ],
)
def test_a_fingerprint_may_be_pasted_as_openssl_prints_it(written: str) -> None:
    assert normalise_fingerprint(written) == FINGERPRINT
    assert DicomPeer(**_peer(tls_certificate_sha256=[written])).tls_certificate_sha256 == [FINGERPRINT]


def test_the_fingerprint_of_the_docs_command_matches_the_one_the_gateway_computes(pki: Pki) -> None:
    printed = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(pki.townus.certificate)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert normalise_fingerprint(printed) == pki.townus.sha256


@pytest.mark.parametrize(
    "bad", ["", "AB:CD", FINGERPRINT + ":EF", "sha1 Fingerprint=" + FINGERPRINT, "ZZ" * 32]
)
def test_anything_but_a_sha256_fingerprint_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="tls_certificate_sha256"):
        DicomPeer(**_peer(tls_certificate_sha256=[bad]))


def test_a_tls_listener_or_a_tls_peer_needs_every_certificate_file(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TELECONSULT_DICOM_TLS_CERTIFICATE must be set"):
        Settings(data_dir=tmp_path, dicom_tls_port=2762)
    with pytest.raises(
        ValidationError, match="TELECONSULT_DICOM_TLS_CA_CERTIFICATES must be set: peer 'PACS'"
    ):
        Settings(
            data_dir=tmp_path,
            dicom_peers=[_peer("PACS", "COUNTY", tls=True)],
            dicom_tls_certificate=pki.gateway.certificate,
            dicom_tls_private_key=pki.gateway.key,
        )
    with pytest.raises(ValidationError, match=r"TELECONSULT_DICOM_TLS_PRIVATE_KEY .* is not a file"):
        Settings(
            data_dir=tmp_path,
            dicom_tls_port=2762,
            **{**_tls_files(pki), "dicom_tls_private_key": tmp_path / "missing.pem"},
        )
    assert Settings(data_dir=tmp_path, dicom_tls_port=2762, **_tls_files(pki)).dicom_tls_port == 2762


def test_the_gateway_must_listen_somewhere_and_tls_needs_its_own_port(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="would listen nowhere"):
        Settings(data_dir=tmp_path, dicom_plain_enabled=False)
    with pytest.raises(ValidationError, match="TLS needs a port of its own"):
        Settings(data_dir=tmp_path, dicom_port=11112, dicom_tls_port=11112, **_tls_files(pki))
    only_tls = Settings(data_dir=tmp_path, dicom_plain_enabled=False, dicom_tls_port=2762, **_tls_files(pki))
    assert not only_tls.dicom_plain_enabled


def test_one_certificate_never_identifies_two_organisations(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="a certificate must identify one organisation"):
        Settings(
            data_dir=tmp_path,
            dicom_peers=[
                _peer("TOWNUS", "TOWN01", tls_certificate_sha256=[FINGERPRINT]),
                _peer("TOWN2US", "TOWN02", tls_certificate_sha256=[FINGERPRINT]),
            ],
        )
    with pytest.raises(ValidationError, match="common name 'US'"):
        Settings(
            data_dir=tmp_path,
            dicom_peers=[
                _peer("TOWNUS", "TOWN01", tls_common_name="US"),
                _peer("TOWN2US", "TOWN02", tls_common_name="US"),
            ],
        )
    # One device of one organisation under two AE titles may share its certificate.
    shared = Settings(
        data_dir=tmp_path,
        dicom_peers=[
            _peer("TOWNUS", "TOWN01", tls_certificate_sha256=[FINGERPRINT]),
            _peer("TOWNUS2", "TOWN01", tls_certificate_sha256=[FINGERPRINT]),
        ],
    )
    assert len(shared.dicom_peers) == 2


def test_every_configured_identity_must_hold() -> None:
    certificate = PeerCertificate(sha256=FINGERPRINT, common_name="TOWNUS", subject="O=Township 1,CN=TOWNUS")
    by_fingerprint = DicomPeer(**_peer(tls_certificate_sha256=[FINGERPRINT]))
    by_name = DicomPeer(**_peer(tls_common_name="TOWNUS"))
    by_both = DicomPeer(**_peer(tls_certificate_sha256=[FINGERPRINT], tls_common_name="TOWNUS"))
    assert identity_mismatch(by_fingerprint, certificate) is None
    assert identity_mismatch(by_name, certificate) is None
    assert identity_mismatch(by_both, certificate) is None

    other_name = DicomPeer(**_peer(tls_certificate_sha256=[FINGERPRINT], tls_common_name="OTHER"))
    assert "common name is not 'OTHER'" in str(identity_mismatch(other_name, certificate))
    other_key = PeerCertificate(sha256=":".join(["CD"] * 32), common_name="TOWNUS", subject="CN=TOWNUS")
    assert "fingerprint is not listed" in str(identity_mismatch(by_both, other_key))
    assert "neither tls_certificate_sha256 nor tls_common_name" in str(
        identity_mismatch(DicomPeer(**_peer(tls=True)), certificate)
    )
    assert [
        p.ae_title for p in peers_proved_by([by_name, DicomPeer(**_peer("X", tls=True))], certificate)
    ] == ["TOWNUS"]


def test_the_contexts_follow_the_non_downgrading_bcp195_profile(pki: Pki, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        dicom_tls_port=2762,
        dicom_peers=[_peer("PACS", "COUNTY", tls=True, tls_server_name="localhost")],
        **_tls_files(pki),
    )
    client_tls = ClientTls(settings)
    client_tls.check()
    args = client_tls.tls_args(settings.dicom_peers[0])
    assert args is not None
    client, server_name = args
    assert server_name == "localhost"
    assert client_tls.tls_args(DicomPeer(**_peer())) is None
    allowed = set(BCP195_TLS12_CIPHERS.split(":"))
    for context in (server_context(settings), client):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.options & ssl.OP_NO_COMPRESSION
        assert context.options & ssl.OP_NO_RENEGOTIATION
        tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 <= allowed
        assert not any(word in name for name in tls12 for word in ("CBC", "RC4", "3DES", "NULL", "SHA1"))
        tls13 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"}
        assert tls13 <= {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}
    assert client.check_hostname


def test_unusable_certificate_files_name_the_setting(pki: Pki, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        dicom_tls_port=2762,
        **{**_tls_files(pki), "dicom_tls_private_key": pki.townus.key},  # another certificate's key
    )
    with pytest.raises(TeleconsultError, match="TELECONSULT_DICOM_TLS_PRIVATE_KEY"):
        server_context(settings)
    not_a_ca = tmp_path / "empty.pem"
    not_a_ca.write_text("not a certificate\n")
    settings = Settings(
        data_dir=tmp_path, dicom_tls_port=2762, **{**_tls_files(pki), "dicom_tls_ca_certificates": not_a_ca}
    )
    with pytest.raises(TeleconsultError, match="TELECONSULT_DICOM_TLS_CA_CERTIFICATES"):
        server_context(settings)
