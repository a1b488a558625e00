"""Issue 5 end to end: a township study becomes a co-signed report back in the township's PACS.

One real ``teleconsult serve`` with its default gateway processes (one per
CPU: the kernel hands the ultrasound's association to the main process or to a
worker, whose event reaches the WebSocket through the relay; either must
notify in time, and test_notifications_workers covers the worker path on
purpose), one real Orthanc as TOWN01's PACS, DCMTK ``storescu`` as the
township's ultrasound, and the API driven as the township and county users
would:

1. the ultrasound stores a study whose patient is 王^小明 (ISO_IR 192); the
   county specialist's ``/api/events`` socket hears ``study.stored`` within a
   second of storescu finishing;
2. the township sonographer requests a consult (``consult.requested`` reaches
   the specialist within a second), the specialist accepts, the township
   doctor drafts in Chinese and signs (performing), the specialist edits and
   signs (reviewing) and hears ``report.signed``;
3. the outputs are made: the signatures verify, the PDF shows the patient,
   findings and both signers, FHIR serves a final DiagnosticReport with the
   PDF as its presented form;
4. the forward rule ``reports-home`` sends the Enhanced SR (VERIFIED, the
   Chinese name intact) and the Encapsulated PDF, and nothing else, to the
   township's PACS, each once;
5. the audit trail holds the store, the request, the signatures and the reads.

It runs on the embedded SQLite and, with ``TELECONSULT_TEST_DATABASE_URL``,
on PostgreSQL (``database_url`` of tests/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom import dcmread
from pydicom.dataset import Dataset
from pypdf import PdfReader
from websockets.sync.client import ClientConnection, connect

from tests.conftest import require_tool
from tests.factories import make_image, write_part10
from tests.orthanc import DCMTK_ENV, Orthanc, free_port, orthanc_binary

PASSWORD = "correct-horse-battery"
DEVICE_AE = "TOWN01US"  # the township's ultrasound
PACS_AE = "TOWN01PACS"  # the township's PACS (Orthanc)
PATIENT_NAME = "王^小明"
PATIENT_ID = "TC-E2E-0001"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# What a notification may take, from storescu's exit or the API's answer to the socket.
NOTIFIED_WITHIN = 1.0
# The users, created with the CLI before serve: (username, role, organisation, display name).
USERS = [
    ("sono1", "sonographer", "TOWN01", "李超声"),
    ("doctor1", "township_doctor", "TOWN01", "王医生"),
    ("specialist", "specialist", "COUNTY", "赵医生"),
    ("admin", "admin", "COUNTY", "管理员"),
]
QUESTION = "肝内低回声结节，性质待定，请会诊。"
DRAFT: dict[str, Any] = {
    "template": "abdominal_ultrasound",
    "findings": {
        "liver": {
            "description": "肝脏大小形态正常，右叶见一低回声结节，大小约12×10mm，边界清。",
            "right_lobe_oblique_mm": 128,
        },
        "gallbladder": {"description": "胆囊大小正常，壁光滑。"},
    },
    "impression": "肝右叶低回声结节，建议增强CT进一步检查。",
}
FINAL_IMPRESSION = "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。"
_SERVING = re.compile(r" (\d+) INFO +dicom_gateway\.workers: gateway worker \d+ serving")
_ASSOCIATION = re.compile(r" (\d+) INFO +dicom_gateway\.ae: association requested by " + DEVICE_AE)


class _Log:
    """The server's stderr, read by a thread so the pipe never fills."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def tail(self, characters: int = 3000) -> str:
        return self.text()[-characters:]

    def close(self) -> None:
        self._thread.join(timeout=30)
        self._stream.close()


def _wait_for(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Service:
    """A running ``teleconsult serve`` and bearer headers per user (signed in once: argon2 is slow)."""

    process: subprocess.Popen[bytes]
    log: _Log
    http_port: int
    dicom_port: int
    http: httpx.Client
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def token(self, user: str) -> str:
        response = self.http.post("/api/auth/token", data={"username": user, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def headers(self, user: str) -> dict[str, str]:
        if user not in self._headers:
            self._headers[user] = {"Authorization": f"Bearer {self.token(user)}"}
        return self._headers[user]

    def call(self, method: str, user: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        assert self.process.poll() is None, f"teleconsult serve exited:\n{self.log.tail()}"
        return self.http.request(method, path, headers=self.headers(user), json=body, params=params or None)

    def gateway_process_of_device(self) -> str:
        """Which gateway process the kernel gave the device's associations to (for failure messages)."""
        pids = [int(pid) for pid in _ASSOCIATION.findall(self.log.text())]
        return ", ".join("the main process" if pid == self.process.pid else f"worker {pid}" for pid in pids)

    def ok(
        self, method: str, user: str, path: str, body: Any = None, status: int = 200, **params: Any
    ) -> Any:
        response = self.call(method, user, path, body, **params)
        assert response.status_code == status, f"{method} {path} as {user}: {response.text}"
        return response.json()


class EventSocket:
    """One user's ``/api/events`` WebSocket; every message received is kept."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    def expect(self, event_type: str, deadline: float, **data: Any) -> dict[str, Any]:
        """The next event of ``event_type`` whose data has these values, received before ``deadline``."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {event_type} {data} in time; received {[m['type'] for m in self.received]}"
                )
            try:
                message = json.loads(self.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            self.received.append(message)
            if message["type"] == event_type and all(message["data"].get(k) == v for k, v in data.items()):
                return message  # type: ignore[no-any-return]


@pytest.fixture
def township_pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc on loopback, answering as TOWN01PACS."""
    pacs = Orthanc(orthanc_binary(), tmp_path / "orthanc", extra_config={"DicomAet": PACS_AE})
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def service(tmp_path: Path, database_url: str, township_pacs: Orthanc) -> Iterator[Service]:
    """``teleconsult serve`` on free loopback ports, configured as a county hospital would be."""
    http_port, dicom_port = free_port(), free_port()
    peers = [
        {"ae_title": DEVICE_AE, "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
        {
            "ae_title": PACS_AE,
            "host": "127.0.0.1",
            "port": township_pacs.dicom_port,
            "organisation": "TOWN01",
            "pacs": True,
        },
    ]
    rules = [
        {
            "name": "reports-home",
            "from_organisations": ["*"],
            "modalities": ["SR", "DOC"],
            "destination": "source-pacs",
        }
    ]
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_DATABASE_URL": database_url,
        "TELECONSULT_HTTP_HOST": "127.0.0.1",
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_PORT": str(dicom_port),
        "TELECONSULT_DICOM_PEERS": json.dumps(peers),
        "TELECONSULT_DICOM_FORWARD_RULES": json.dumps(rules),
        # Short forwarding timers, as in test_forward_orthanc: stable after 0.2 s, retries from 0.2 s.
        "TELECONSULT_DICOM_FORWARD_STABLE_SECONDS": "0.2",
        "TELECONSULT_DICOM_FORWARD_RETRY_BASE_SECONDS": "0.2",
        "TELECONSULT_DICOM_FORWARD_MAX_RETRY_SECONDS": "0.5",
    }
    cli = [sys.executable, "-m", "teleconsult"]

    def run(*args: str) -> None:
        done = subprocess.run(
            [*cli, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"teleconsult {' '.join(args[:2])}: {done.stderr}"

    run("org", "add", "COUNTY", "--name", "County Hospital")
    run("org", "add", "TOWN01", "--name", "Township 1", "--parent", "COUNTY")
    for username, role, organisation, display_name in USERS:
        options = {
            "--password": PASSWORD,
            "--role": role,
            "--org": organisation,
            "--display-name": display_name,
        }
        run("user", "add", username, *[part for option in options.items() for part in option])

    process = subprocess.Popen([*cli, "serve"], env=env, stderr=subprocess.PIPE)
    log = _Log(process)
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        # The default gateway processes: one per usable CPU, all but the first in workers.
        workers = max(1, len(os.sched_getaffinity(0))) - 1

        def ready() -> bool:
            assert process.poll() is None, f"teleconsult serve exited early:\n{log.tail()}"
            if len(_SERVING.findall(log.text())) < workers:
                return False
            try:
                return http.get("/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(ready, "teleconsult serve to be healthy with its gateway workers", 60)
        yield Service(process, log, http_port, dicom_port, http)
    finally:
        http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
    assert process.returncode == 0, f"teleconsult serve did not stop cleanly:\n{log.tail()}"
    assert "stopped" in log.text()


@pytest.fixture
def specialist_events(service: Service) -> Iterator[EventSocket]:
    """The county specialist signed in, with ``/api/events`` open and ``ready``."""
    token = service.token("specialist")
    with connect(f"ws://127.0.0.1:{service.http_port}/api/events", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        yield EventSocket(ws)


def _storescu(port: int, path: Path) -> None:
    result = subprocess.run(
        [
            require_tool("storescu"),
            "-aet",
            DEVICE_AE,
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(port),
            str(path),
        ],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _pdf_text(pdf: bytes) -> str:
    """The PDF's text with all white space removed (table cells wrap, names are spaced)."""
    return "".join("".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages).split())


def _text_values(data_set: Dataset) -> list[str]:
    """Every TEXT content item of an SR, depth first."""
    values: list[str] = []
    for item in data_set.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            values.append(str(item.TextValue))
        values.extend(_text_values(item))
    return values


def test_a_township_study_comes_back_as_a_co_signed_report_in_the_township_pacs(
    tmp_path: Path, service: Service, specialist_events: EventSocket, township_pacs: Orthanc
) -> None:
    events = specialist_events

    # -- 1. the township's ultrasound stores a study; the specialist hears of it within a second
    image = make_image(charset="ISO_IR 192", patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    study_uid = str(image.StudyInstanceUID)
    _storescu(service.dicom_port, write_part10(image, tmp_path / "us.dcm"))
    finished = time.monotonic()
    try:
        stored = events.expect("study.stored", finished + NOTIFIED_WITHIN, study_instance_uid=study_uid)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (stored by {service.gateway_process_of_device()})") from None
    assert stored["data"]["source_organisation"] == "TOWN01"
    assert stored["data"]["instances"] == 1
    assert stored["data"]["calling_ae_title"] == DEVICE_AE
    assert "王" not in json.dumps(stored, ensure_ascii=False), "events carry no patient names"

    # -- 2. request, accept, draft, performing and reviewing signatures
    consult = service.ok(
        "POST",
        "sono1",
        "/api/consults",
        {"study_instance_uid": study_uid, "urgency": "urgent", "question": QUESTION},
        status=201,
    )
    cid = consult["id"]
    assert consult["status"] == "requested"
    assert consult["target"]["organisation"] == "COUNTY"
    requested = events.expect("consult.requested", time.monotonic() + NOTIFIED_WITHIN, consult_id=cid)
    assert requested["data"]["study_instance_uid"] == study_uid

    accepted = service.ok("POST", "specialist", f"/api/consults/{cid}/accept")
    assert (accepted["status"], accepted["assignee"]) == ("accepted", "specialist")

    report_path = f"/api/consults/{cid}/report"
    draft = service.ok("PUT", "doctor1", report_path, DRAFT)
    assert (draft["version"], draft["status"]) == (1, "draft")
    preliminary = service.ok("POST", "doctor1", f"{report_path}/sign")
    assert preliminary["status"] == "preliminary"
    edited = service.ok(
        "PUT", "specialist", report_path, {**DRAFT, "impression": FINAL_IMPRESSION, "base_version": 1}
    )
    assert edited["version"] == 2
    final = service.ok("POST", "specialist", f"{report_path}/sign")
    assert (final["status"], final["consult_status"], final["final_version"]) == ("final", "signed", 2)
    assert [(s["role"], s["signer"], s["version"]) for s in final["signatures"]] == [
        ("performing", "doctor1", 1),
        ("reviewing", "specialist", 2),
    ]
    signed = events.expect("report.signed", time.monotonic() + 10, consult_id=cid)
    assert (signed["data"]["version"], signed["data"]["final"], signed["data"]["kind"]) == (2, True, "report")

    # -- 3. the outputs: verified, the PDF, FHIR
    def outputs_done() -> dict[str, Any] | None:
        rows = service.ok("GET", "sono1", f"{report_path}/outputs")
        assert all(row["status"] != "failed" for row in rows), rows
        return rows[0] if len(rows) == 1 and rows[0]["status"] == "done" else None

    output = _wait_for(outputs_done, "the outputs of the signed report", 60)
    assert (output["version"], output["kind"], output["study_instance_uid"]) == (2, "report", study_uid)
    sr_uid = output["structured_report"]["sop_instance_uid"]
    pdf_uid = output["encapsulated_pdf"]["sop_instance_uid"]

    verification = service.ok("GET", "sono1", f"{report_path}/verify")
    assert (verification["valid"], verification["final"]) == (True, True)
    assert [(s["role"], s["signer"], s["valid"]) for s in verification["signatures"]] == [
        ("performing", "doctor1", True),
        ("reviewing", "specialist", True),
    ]

    response = service.call("GET", "sono1", f"{report_path}/pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    pdf = response.content
    assert pdf.startswith(b"%PDF-")
    assert hashlib.sha256(pdf).hexdigest() == output["pdf_sha256"]
    text = _pdf_text(pdf)
    for expected in (
        "王小明",
        PATIENT_ID,
        "Township1(TOWN01)",
        "CountyHospital(COUNTY)",
        QUESTION,
        FINAL_IMPRESSION,
        "王医生",
        "赵医生",
        "右叶见一低回声结节",
    ):
        assert expected in text, expected
    for signature in final["signatures"]:
        assert signature["key_fingerprint"] in text

    fhir = service.call("GET", "sono1", f"/fhir/DiagnosticReport/{cid}")
    assert fhir.status_code == 200, fhir.text
    diagnostic_report = DiagnosticReport.model_validate(fhir.json())
    assert diagnostic_report.status == "final"
    assert diagnostic_report.conclusion == FINAL_IMPRESSION
    # 王^小明 (one component group, as many devices write it) reads as written, without a space
    assert diagnostic_report.subject.display == "王小明"
    (form,) = diagnostic_report.presentedForm
    assert form.contentType == "application/pdf"
    assert base64.b64decode(fhir.json()["presentedForm"][0]["data"]) == pdf

    # -- 4. the township's PACS gets the SR and the Encapsulated PDF, once each, and not its own image
    def forwarded() -> bool:
        rows = service.ok("GET", "sono1", f"{report_path}/outputs")[0]["forwarding"]
        assert all(row["status"] != "failed" for row in rows), rows
        return len(rows) == 2 and all(row["status"] == "sent" for row in rows)

    _wait_for(forwarded, "the SR and the PDF forwarded to the township's PACS", 60)
    rows = service.ok("GET", "sono1", f"{report_path}/outputs")[0]["forwarding"]
    assert {(r["sop_instance_uid"], r["destination_ae_title"], r["rule"]) for r in rows} == {
        (sr_uid, PACS_AE, "reports-home"),
        (pdf_uid, PACS_AE, "reports-home"),
    }
    queue = service.ok("GET", "admin", "/api/forwarding", study_instance_uid=study_uid)
    assert {e["sop_instance_uid"] for e in queue["entries"]} == {sr_uid, pdf_uid}, "no row for the image"

    in_pacs = township_pacs.instances()
    assert set(in_pacs) == {sr_uid, pdf_uid}
    assert image.SOPInstanceUID not in in_pacs, "the township's own image is not sent back"
    assert township_pacs.received() == Counter({(sr_uid, "TELECONSULT"): 1, (pdf_uid, "TELECONSULT"): 1})

    def from_pacs(sop_instance_uid: str) -> Dataset:
        response = httpx.get(f"{township_pacs.url}/instances/{in_pacs[sop_instance_uid]}/file", timeout=10)
        assert response.status_code == 200
        return dcmread(BytesIO(response.content))

    sr = from_pacs(sr_uid)
    assert (sr.SOPClassUID, sr.Modality, sr.StudyInstanceUID) == (ENHANCED_SR, "SR", study_uid)
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert str(sr.PatientName) == PATIENT_NAME
    assert sr.PatientID == PATIENT_ID
    # co-signed: the specialist verified it, the township doctor authored and attested it
    assert "赵医生" in str(sr.VerifyingObserverSequence[0].VerifyingObserverName)
    assert "王医生" in str(sr.AuthorObserverSequence[0].PersonName)
    (attest,) = sr.ParticipantSequence
    assert (attest.ParticipationType, attest.PersonIdentificationCodeSequence[0].CodeValue) == (
        "ATTEST",
        "doctor1",
    )
    assert FINAL_IMPRESSION in _text_values(sr)

    document = from_pacs(pdf_uid)
    assert (document.SOPClassUID, document.Modality, document.StudyInstanceUID) == (
        ENCAPSULATED_PDF,
        "DOC",
        study_uid,
    )
    assert str(document.PatientName) == PATIENT_NAME
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    encapsulated = bytes(document.EncapsulatedDocument)
    assert encapsulated[: len(pdf)] == pdf
    assert len(encapsulated) - len(pdf) <= 1  # padded to an even length

    # -- 5. the audit trail
    trail = service.ok("GET", "admin", "/api/audit", study_instance_uid=study_uid, limit=1000)
    actions = {(row["action"], row["actor"], row["outcome"]) for row in trail}
    expected_actions = {
        ("instance.store", DEVICE_AE, "success"),
        ("consult.create", "sono1", "success"),
        ("consult.update", "specialist", "success"),
        ("report.update", "doctor1", "success"),
        ("report.update", "specialist", "success"),
        ("report.sign", "doctor1", "success"),
        ("report.sign", "specialist", "success"),
        ("report.verify", "sono1", "success"),
        ("report.read", "sono1", "success"),
    }
    assert expected_actions <= actions, sorted(expected_actions - actions)
    assert all(
        row["patient_id"] == PATIENT_ID
        for row in trail
        if (row["action"], row["actor"], row["outcome"]) in expected_actions
    )
    signs = [
        row["detail"] for row in trail if row["action"] == "report.sign" and row["actor"] == "specialist"
    ]
    assert any(final["signatures"][1]["key_fingerprint"] in detail for detail in signs), signs
    connects = service.ok("GET", "admin", "/api/audit", actor="specialist", limit=1000)
    assert ("events.connect", "success") in {(row["action"], row["outcome"]) for row in connects}
