"""DICOM TLS against real peers on loopback: DCMTK echoscu/storescu/storescp and pynetdicom.

The gateway runs its plain and its TLS listener side by side. Peers:
TOWNUS (TOWN01) must use TLS and is proved by its certificate's fingerprint;
STORESCU (TOWN02) may use either port and is proved over TLS by its common
name; PACS (COUNTY) is a DCMTK storescp on TLS, the forwarding and C-MOVE
destination.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.ae import start_gateway
from dicom_gateway.forwarder import Forwarder
from dicom_gateway.sockets import RequestorAE
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.storage.outbox import ForwardStatus
from teleconsult.storage.store import InstanceStore
from tests.conftest import require_tool
from tests.factories import US_IMAGE, encode, make_image, write_part10
from tests.security.conftest import Pki
from tests.security.pki import Issued

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something listens on the loopback TCP port (without connecting to it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120, check=False)


def _tls_options(identity: Issued, trusted: Path) -> list[str]:
    """DCMTK: our key and certificate, the CA the server must be signed by, the BCP 195 ND profile."""
    return ["+tls", str(identity.key), str(identity.certificate), "+cf", str(trusted), "+py"]


@dataclass
class TlsGateway:
    settings: Settings
    store: InstanceStore
    plain: ThreadedAssociationServer
    tls: ThreadedAssociationServer
    pki: Pki

    @property
    def plain_port(self) -> int:
        return int(self.plain.server_address[1])

    @property
    def tls_port(self) -> int:
        return int(self.tls.server_address[1])

    def echoscu(
        self, calling: str, identity: Issued | None, *, port: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        tls = _tls_options(identity, self.pki.ca.certificate) if identity is not None else []
        target = self.tls_port if port is None else port
        return _run(
            [require_tool("echoscu"), "-aet", calling, "-aec", "TELECONSULT", *tls, "127.0.0.1", str(target)]
        )

    def audit(self, *, wait_for: int = 1, **filters: Any) -> list[dict[str, Any]]:
        """Audit rows, newest first; refusals are written after the peer already saw them."""
        deadline = time.monotonic() + 10
        while True:
            rows = AuditLog(self.store.index.engine).query(limit=1000, **filters)
            if len(rows) >= wait_for or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


def _peers(pki: Pki, pacs_port: int) -> list[dict[str, Any]]:
    return [
        {
            "ae_title": "TOWNUS",
            "host": "127.0.0.1",
            "port": 104,
            "organisation": "TOWN01",
            "tls": True,
            "tls_certificate_sha256": [pki.townus.sha256],
        },
        {
            "ae_title": "STORESCU",
            "host": "127.0.0.1",
            "port": 104,
            "organisation": "TOWN02",
            "tls_common_name": "STORESCU",
        },
        {
            "ae_title": "PACS",
            "host": "127.0.0.1",
            "port": pacs_port,
            "organisation": "COUNTY",
            "tls": True,
            "tls_certificate_sha256": [pki.pacs.sha256],
        },
    ]


def _tls_files(pki: Pki) -> dict[str, Any]:
    return {
        "dicom_tls_certificate": pki.gateway.certificate,
        "dicom_tls_private_key": pki.gateway.key,
        "dicom_tls_ca_certificates": pki.ca.certificate,
    }


@pytest.fixture
def pacs_port() -> int:
    return _free_port()


@pytest.fixture
def tls_gateway(make_settings, pki: Pki, pacs_port: int) -> Iterator[TlsGateway]:  # type: ignore[no-untyped-def]
    settings = make_settings(
        dicom_tls_port=0,
        dicom_peers=_peers(pki, pacs_port),
        dicom_forward_rules=[{"name": "county", "from_organisations": ["TOWN01"], "destination": "PACS"}],
        dicom_forward_stable_seconds=0,
        **_tls_files(pki),
    )
    store = InstanceStore(settings)
    store.open()
    plain = start_gateway(settings, store, host="127.0.0.1", port=0)
    tls = start_gateway(settings, store, host="127.0.0.1", port=0, tls=True)
    try:
        yield TlsGateway(settings, store, plain, tls, pki)
    finally:
        tls.shutdown()
        plain.shutdown()
        store.close()


@pytest.fixture
def start_storescp(tmp_path: Path, pki: Pki) -> Iterator[Callable[[Issued, int], Path]]:
    """DCMTK storescp on TLS as the PACS: returns the folder it writes what it receives to."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def _start(identity: Issued, port: int) -> Path:
        out = tmp_path / f"storescp-{port}"
        out.mkdir()
        log = (tmp_path / f"storescp-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                require_tool("storescp"),
                "-aet",
                "PACS",
                *_tls_options(identity, pki.ca.certificate),
                "-od",
                str(out),
                str(port),
            ],
            env=DCMTK_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert process.poll() is None, (tmp_path / f"storescp-{port}.log").read_text()
            assert time.monotonic() < deadline, "storescp did not start listening"
            time.sleep(0.05)
        return out

    yield _start
    for process, log in started:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _client_context(pki: Pki, identity: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.certificate))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        context.load_cert_chain(identity.certificate, identity.key)
    return context


def test_dcmtk_echoes_and_stores_over_tls_and_the_instance_is_indexed(
    tls_gateway: TlsGateway, tmp_path: Path
) -> None:
    pki = tls_gateway.pki
    echo = tls_gateway.echoscu("TOWNUS", pki.townus)
    assert echo.returncode == 0, echo.stderr

    image = write_part10(make_image(patient_id="TLS1"), tmp_path / "us.dcm")
    sent = _run(
        [
            require_tool("storescu"),
            "-aet",
            "TOWNUS",
            "-aec",
            "TELECONSULT",
            *_tls_options(pki.townus, pki.ca.certificate),
            "127.0.0.1",
            str(tls_gateway.tls_port),
            str(image),
        ]
    )

    assert sent.returncode == 0, sent.stderr
    record = tls_gateway.store.index.instance(dcmread(image).SOPInstanceUID)
    assert record is not None
    assert record.calling_ae_title == "TOWNUS"
    assert record.source_organisation == "TOWN01"
    stored = tls_gateway.audit(actor="TOWNUS", wait_for=1)
    assert [(row["action"], row["outcome"]) for row in stored] == [("instance.store", "success")]


def test_a_plain_client_on_the_tls_port_fails_and_is_audited(tls_gateway: TlsGateway, tmp_path: Path) -> None:
    image = write_part10(make_image(), tmp_path / "us.dcm")

    plain = _run(
        [
            require_tool("storescu"),
            "-aet",
            "STORESCU",
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(tls_gateway.tls_port),
            str(image),
        ]
    )

    assert plain.returncode != 0
    assert tls_gateway.store.index.counts()["instances"] == 0
    (row,) = tls_gateway.audit(actor="anonymous")
    assert (row["action"], row["outcome"], row["resource"]) == ("association", "denied", "TLS")
    assert "not TLS: a plain DICOM client on the TLS port?" in row["detail"]
    # The listener serves the next client as before.
    assert tls_gateway.echoscu("STORESCU", tls_gateway.pki.storescu).returncode == 0


def test_a_certificate_no_configured_ca_signed_is_refused_in_the_handshake(tls_gateway: TlsGateway) -> None:
    refused = tls_gateway.echoscu("TOWNUS", tls_gateway.pki.rogue_townus)

    assert refused.returncode != 0
    (row,) = tls_gateway.audit(actor="anonymous")
    assert (row["action"], row["outcome"], row["resource"]) == ("association", "denied", "TLS")
    assert "client certificate not trusted" in row["detail"]
    assert row["source_address"] == "127.0.0.1"
    # Nothing reached DICOM: no association row for the AE title it would have claimed.
    assert tls_gateway.audit(actor="TOWNUS", wait_for=0) == []
    assert tls_gateway.echoscu("TOWNUS", tls_gateway.pki.townus).returncode == 0


def test_a_silent_client_holds_up_no_other_handshake(tls_gateway: TlsGateway) -> None:
    with socket.create_connection(("127.0.0.1", tls_gateway.tls_port)):
        # Connected, never says hello: the next client is served all the same.
        echo = tls_gateway.echoscu("TOWNUS", tls_gateway.pki.townus)
    assert echo.returncode == 0, echo.stderr


def test_peer_a_certificate_with_peer_b_ae_title_is_rejected_and_audited(tls_gateway: TlsGateway) -> None:
    # TOWNUS's certificate (organisation TOWN01) claiming to be STORESCU (TOWN02).
    impostor = tls_gateway.echoscu("STORESCU", tls_gateway.pki.townus)

    assert impostor.returncode != 0
    assert "Calling AE Title Not Recognized" in impostor.stderr, impostor.stderr
    (row,) = tls_gateway.audit(actor="STORESCU")
    assert (row["action"], row["outcome"], row["resource"]) == ("association", "denied", "A-ASSOCIATE")
    assert row["actor_organisation"] == "TOWN02"
    assert "does not prove calling AE title STORESCU" in row["detail"]
    assert "it is the certificate of peer TOWNUS (organisation TOWN01)" in row["detail"]
    assert tls_gateway.pki.townus.sha256 in row["detail"]

    # And the other way round: STORESCU's certificate is not TOWNUS's fingerprint.
    other = tls_gateway.echoscu("TOWNUS", tls_gateway.pki.storescu)
    assert other.returncode != 0
    (row,) = tls_gateway.audit(actor="TOWNUS")
    assert "fingerprint is not listed for peer TOWNUS" in row["detail"]


def test_a_peer_configured_for_tls_is_rejected_on_the_plain_port(tls_gateway: TlsGateway) -> None:
    refused = tls_gateway.echoscu("TOWNUS", None, port=tls_gateway.plain_port)

    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
    (row,) = tls_gateway.audit(actor="TOWNUS")
    assert row["outcome"] == "denied"
    assert "must connect to the TLS port" in row["detail"]
    # A peer without "tls": true keeps using the plain port.
    allowed = tls_gateway.echoscu("STORESCU", None, port=tls_gateway.plain_port)
    assert allowed.returncode == 0, allowed.stderr


def test_pynetdicom_stores_over_tls_and_needs_a_client_certificate(tls_gateway: TlsGateway) -> None:
    pki = tls_gateway.pki
    ae = AE("STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(US_IMAGE)
    image = make_image(patient_id="TLS2")

    assoc = ae.associate(
        "127.0.0.1",
        tls_gateway.tls_port,
        ae_title="TELECONSULT",
        tls_args=(_client_context(pki, pki.storescu), "localhost"),
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(image).Status == 0x0000
    finally:
        assoc.release()
    record = tls_gateway.store.index.instance(image.SOPInstanceUID)
    assert record is not None
    assert record.source_organisation == "TOWN02"

    # Without a client certificate the handshake fails: no association. (RequestorAE:
    # pynetdicom's own AE leaves the socket of a failed TLS connect unclosed.)
    bare = RequestorAE("STORESCU")
    bare.add_requested_context(Verification)
    anonymous = bare.associate(
        "127.0.0.1",
        tls_gateway.tls_port,
        ae_title="TELECONSULT",
        tls_args=(_client_context(pki, None), "localhost"),
    )
    assert not anonymous.is_established
    rows = tls_gateway.audit(actor="anonymous")
    assert any("no client certificate" in row["detail"] for row in rows), rows


def _put(store: InstanceStore, ae_title: str, organisation: str, **image: Any) -> Dataset:
    ds = make_image(**image)
    store.store_instance(
        encode(ds), ExplicitVRLittleEndian, calling_ae_title=ae_title, source_organisation=organisation
    )
    return ds


def _received(folder: Path, count: int) -> list[Dataset]:
    deadline = time.monotonic() + 15
    while len(files := sorted(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [dcmread(path) for path in files]


def test_the_forwarder_delivers_to_a_tls_pacs_with_our_certificate(
    tls_gateway: TlsGateway, start_storescp: Callable[[Issued, int], Path], pacs_port: int
) -> None:
    received = start_storescp(tls_gateway.pki.pacs, pacs_port)
    ds = _put(tls_gateway.store, "TOWNUS", "TOWN01", patient_id="FWD1")

    assert Forwarder(tls_gateway.settings, tls_gateway.store).run_once() == 1

    assert tls_gateway.store.outbox.counts()["sent"] == 1
    assert [r.SOPInstanceUID for r in _received(received, 1)] == [ds.SOPInstanceUID]


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("townus", "presented a certificate that is not the peer's"),  # trusted, but not PACS's
        ("rogue_townus", "certificate verify failed"),  # not signed by our CA
    ],
)
def test_the_forwarder_sends_nothing_to_a_tls_peer_with_the_wrong_certificate(
    tls_gateway: TlsGateway,
    start_storescp: Callable[[Issued, int], Path],
    pacs_port: int,
    identity: str,
    reason: str,
) -> None:
    received = start_storescp(getattr(tls_gateway.pki, identity), pacs_port)
    _put(tls_gateway.store, "TOWNUS", "TOWN01")

    Forwarder(tls_gateway.settings, tls_gateway.store).run_once()

    (entry,) = tls_gateway.store.outbox.list_entries()
    assert entry.status is ForwardStatus.PENDING
    assert "over DICOM TLS" in str(entry.last_error)
    assert reason in str(entry.last_error)
    assert list(received.iterdir()) == []


def test_c_move_to_a_tls_destination_goes_over_tls(
    tls_gateway: TlsGateway, start_storescp: Callable[[Issued, int], Path], pacs_port: int
) -> None:
    pki = tls_gateway.pki
    received = start_storescp(pki.pacs, pacs_port)
    ds = _put(tls_gateway.store, "STORESCU", "TOWN02", patient_id="MOVE1")
    ae = AE("STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ds.StudyInstanceUID

    assoc = ae.associate(
        "127.0.0.1",
        tls_gateway.tls_port,
        ae_title="TELECONSULT",
        tls_args=(_client_context(pki, pki.storescu), "127.0.0.1"),
    )
    assert assoc.is_established
    try:
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_move(identifier, "PACS", StudyRootQueryRetrieveInformationModelMove)
        ]
    finally:
        assoc.release()

    assert statuses[-1] == 0x0000, statuses
    assert [r.SOPInstanceUID for r in _received(received, 1)] == [ds.SOPInstanceUID]


_WORKER_SERVING = re.compile(r"gateway worker (\d+) serving")
_TLS_ASSOCIATION = re.compile(
    r" (\d+) INFO +dicom_gateway\.ae: association requested by TOWNUS \(127\.0\.0\.1\) over TLS"
)


def _log_reader(process: subprocess.Popen[bytes], lines: list[str]) -> threading.Thread:
    def _read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.append(raw.decode(errors="replace"))

    thread = threading.Thread(target=_read, daemon=True)
    thread.start()
    return thread


def _wait_for(lines: list[str], pattern: re.Pattern[str], count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.findall("".join(lines))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern.pattern!r} seen fewer than {count} times:\n{''.join(lines)[-3000:]}")


@pytest.mark.slow
def test_serve_with_workers_answers_tls_in_every_process_and_can_drop_the_plain_port(
    tmp_path: Path, pki: Pki
) -> None:
    echoscu = require_tool("echoscu")
    plain_port, tls_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_DICOM_PORT": str(plain_port),
        "TELECONSULT_DICOM_PLAIN_ENABLED": "false",
        "TELECONSULT_DICOM_TLS_PORT": str(tls_port),
        "TELECONSULT_DICOM_TLS_CERTIFICATE": str(pki.gateway.certificate),
        "TELECONSULT_DICOM_TLS_PRIVATE_KEY": str(pki.gateway.key),
        "TELECONSULT_DICOM_TLS_CA_CERTIFICATES": str(pki.ca.certificate),
        "TELECONSULT_DICOM_WORKERS": "2",
        "TELECONSULT_DICOM_PEERS": json.dumps(_peers(pki, 104)),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "teleconsult", "serve", "--no-http"], env=env, stderr=subprocess.PIPE
    )
    lines: list[str] = []
    reader = _log_reader(server, lines)
    try:
        (worker,) = {int(pid) for pid in _wait_for(lines, _WORKER_SERVING, 1)}
        command = [
            echoscu,
            "-aet",
            "TOWNUS",
            "-aec",
            "TELECONSULT",
            *_tls_options(pki.townus, pki.ca.certificate),
        ]
        results: list[subprocess.CompletedProcess[str]] = []
        threads = [
            threading.Thread(target=lambda: results.append(_run([*command, "127.0.0.1", str(tls_port)])))
            for _ in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.stderr for r in results if r.returncode != 0] == []
        handled_by = {int(pid) for pid in _wait_for(lines, _TLS_ASSOCIATION, 12)}
        assert handled_by == {server.pid, worker}, "every TLS association went to the same process"
        assert not _listening(plain_port), "the plain port is off"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        reader.join(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    assert server.returncode == 0, "".join(lines)[-3000:]
