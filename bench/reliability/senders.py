"""Senders that record exactly what teleconsult acknowledged, and the bytes it was sent.

A C-STORE counts as acknowledged only when its response says 0x0000; a
STOW-RS instance only when the Store Instances Response lists it in
ReferencedSOPSequence. Each acknowledgement keeps the SHA-256 of the data set
that went on the wire (teleconsult stores the data set as received, behind
its own File Meta, and keys the file by that digest), so a check afterwards
proves the stored bytes are the sent ones.

The instances are small synthetic ultrasound images (32x32, 8-bit, Explicit
VR Little Endian, ``2.25.`` UIDs), never patient data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.dsutils import encode, encode_file_meta

from bench.reliability.server import AE_TITLE, CALLING_AE_TITLE, HOST
from dicom_gateway.sockets import RequestorAE

__all__ = [
    "DCMSEND",
    "US_IMAGE",
    "Ack",
    "AssociationRejection",
    "DcmsendLoad",
    "Instances",
    "Outgoing",
    "StowSender",
    "StreamSender",
    "hold_associations",
    "quiet_pynetdicom",
    "request_association",
]

logger = logging.getLogger(__name__)

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
DCMSEND = "dcmsend"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_BOUNDARY = "reliability-boundary-7f3a"
_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


@dataclass(frozen=True, slots=True)
class Ack:
    sop_instance_uid: str
    sha256: str  # of the data set as sent
    via: str  # "c-store" or "stow-rs"


@dataclass(frozen=True, slots=True)
class Outgoing:
    dataset: Dataset
    data_set: bytes  # encoded as it goes on the wire (Explicit VR Little Endian)
    sha256: str

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    def part10(self) -> bytes:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.dataset.SOPClassUID
        meta.MediaStorageSOPInstanceUID = self.dataset.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1"
        return b"\0" * 128 + b"DICM" + encode_file_meta(meta) + self.data_set


class Instances:
    """One made-up patient's study, one series per sender, a new instance each call.

    32x32 pixels by default (about 1.5 KB an instance); larger ones keep a
    write in flight longer, so a kill more often leaves a temporary file.
    """

    def __init__(self, label: str, *, rows: int = 32, columns: int = 32) -> None:
        self.label = label
        self.rows = rows
        self.columns = columns
        self.study_instance_uid = _uid()
        self.series_instance_uid = _uid()
        self._number = 0
        self._random = random.Random(label)

    def next(self) -> Outgoing:
        self._number += 1
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = US_IMAGE
        ds.SOPInstanceUID = _uid()
        ds.StudyDate = "20261124"
        ds.StudyTime = "101500"
        ds.AccessionNumber = self.label[:16]
        ds.Modality = "US"
        ds.ReferringPhysicianName = ""
        ds.PatientName = "Wang^XiaoMing=王^小明"
        ds.PatientID = f"REL-{self.label}"[:64]
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "M"
        ds.StudyInstanceUID = self.study_instance_uid
        ds.SeriesInstanceUID = self.series_instance_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = self._number
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = self.rows
        ds.Columns = self.columns
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = self._random.randbytes(self.rows * self.columns)
        ds.set_original_encoding(False, True, None)
        data_set = encode(ds, False, True)
        assert data_set is not None
        return Outgoing(ds, data_set, hashlib.sha256(data_set).hexdigest())


@contextmanager
def quiet_pynetdicom() -> Iterator[None]:
    """pynetdicom's per-PDU log handlers and its error lines off while senders run (then restored)."""
    previous = _config.LOG_HANDLER_LEVEL
    pynetdicom_logger = logging.getLogger("pynetdicom")
    previous_level = pynetdicom_logger.level
    _config.LOG_HANDLER_LEVEL = "none"
    # a sender retrying while the server restarts would log every refused connection
    pynetdicom_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        _config.LOG_HANDLER_LEVEL = previous
        pynetdicom_logger.setLevel(previous_level)


def _ae(timeout: float) -> RequestorAE:
    # pynetdicom leaks the socket of a refused connect; this AE (the gateway's own requestor) closes it
    ae = RequestorAE(ae_title=CALLING_AE_TITLE)
    ae.add_requested_context(US_IMAGE, ExplicitVRLittleEndian)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    return ae


@dataclass(frozen=True, slots=True)
class AssociationRejection:
    """An A-ASSOCIATE-RJ as pynetdicom reports it (PS3.8 9.3.4)."""

    result: int  # 0x01 rejected-permanent, 0x02 rejected-transient
    source: int  # 0x03 service-provider (presentation)
    diagnostic: int  # with source 0x03: 0x02 local-limit-exceeded

    @property
    def text(self) -> str:
        result = {0x01: "rejected-permanent", 0x02: "rejected-transient"}.get(self.result, hex(self.result))
        reason = "local-limit-exceeded" if (self.source, self.diagnostic) == (0x03, 0x02) else "other"
        return f"{result} (source {self.source:#04x}, reason {self.diagnostic:#04x}: {reason})"


def request_association(port: int, timeout: float = 10.0) -> tuple[Any, AssociationRejection | None]:
    """Ask for one association; the association (established or not) and the rejection, if any."""
    assoc = _ae(timeout).associate(HOST, port, ae_title=AE_TITLE)
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        return assoc, AssociationRejection(
            int(primitive.result), int(primitive.result_source), int(primitive.diagnostic)
        )
    return assoc, None


def _status(response: Dataset) -> int | None:
    status = response.get("Status")
    return None if status is None else int(status)


_REPORT_ENTRY = re.compile(r"SOP Instance\s*: (\S+).*?DIMSE Status\s*: 0x([0-9A-Fa-f]{4})", re.DOTALL)


@dataclass
class DcmsendLoad:
    """One association of ``count`` instances sent by DCMTK ``dcmsend``, as a device would.

    The instances are written as Part 10 files first; ``dcmsend`` (with
    ``TCP_NODELAY=1``: DCMTK leaves Nagle on otherwise) sends them over one
    association and writes a report with each instance's DIMSE status, from
    which the acknowledgements are read. A C++ sender in its own process
    never becomes the bottleneck, and shares no GIL with the others.
    """

    port: int
    label: str
    count: int
    directory: Path
    timeout: int = 60
    acks: list[Ack] = field(default_factory=list)
    refusals: Counter[int] = field(default_factory=Counter)
    error: str | None = None
    _sent: dict[str, str] = field(default_factory=dict)

    def prepare(self) -> None:
        instances = Instances(self.label)
        self.directory.mkdir(parents=True)
        for number in range(self.count):
            outgoing = instances.next()
            (self.directory / f"{number:05d}.dcm").write_bytes(outgoing.part10())
            self._sent[outgoing.sop_instance_uid] = outgoing.sha256

    def run(self) -> None:
        report = self.directory.with_suffix(".report.txt")
        command = [DCMSEND, "--single-association", "--dimse-timeout", str(self.timeout)]
        command += ["--acse-timeout", str(self.timeout), "--aetitle", CALLING_AE_TITLE, "--call", AE_TITLE]
        command += ["--create-report-file", str(report), "--scan-directories", HOST, str(self.port)]
        command.append(str(self.directory))
        try:
            completed = subprocess.run(
                command,
                env={**os.environ, "TCP_NODELAY": "1"},
                capture_output=True,
                text=True,
                timeout=self.timeout * (self.count + 2),
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.error = "dcmsend did not finish"
            return
        if completed.returncode != 0:
            self.error = f"dcmsend exit status {completed.returncode}: {completed.stderr.strip()[-300:]}"
        text = report.read_text(errors="replace") if report.is_file() else ""
        for uid, status in _REPORT_ENTRY.findall(text):
            code = int(status, 16)
            if code == 0x0000 and uid in self._sent:
                self.acks.append(Ack(uid, self._sent[uid], "c-store"))
            elif code != 0x0000:
                self.refusals[code] += 1


def hold_associations(port: int, count: int) -> list[Any]:
    """``count`` idle associations, opened one by one (the caller releases them)."""
    held = []
    for _ in range(count):
        # idle until released: our side must not give up on them first
        assoc, _rejection = request_association(port, timeout=300)
        if assoc.is_established:
            held.append(assoc)
    return held


@dataclass
class StreamSender:
    """Sends instances until stopped, reconnecting whenever the server goes away.

    An instance not acknowledged (no answer, or a failure status) is sent
    again on the next association, as a device retries: teleconsult must
    take the repeat as a harmless duplicate.
    """

    port: int
    label: str
    stop: threading.Event
    timeout: float = 10.0
    rows: int = 32
    columns: int = 32
    acks: list[Ack] = field(default_factory=list)
    refusals: Counter[int] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    # the instance sent and not yet acknowledged (None between instances)
    pending: Outgoing | None = None
    associations: int = 0
    interrupted: int = 0  # associations lost with an instance in flight
    resent: int = 0

    def run(self) -> None:
        instances = Instances(self.label, rows=self.rows, columns=self.columns)
        ae = _ae(self.timeout)
        while not self.stop.is_set():
            assoc = ae.associate(HOST, self.port, ae_title=AE_TITLE)
            if not assoc.is_established:
                if assoc.is_rejected:
                    self.rejections[str(int(assoc.acceptor.primitive.result))] += 1
                self.stop.wait(0.05)
                continue
            self.associations += 1
            try:
                while not self.stop.is_set():
                    if self.pending is None:
                        self.pending = instances.next()
                    else:
                        self.resent += 1
                    outgoing = self.pending
                    status = _status(assoc.send_c_store(outgoing.dataset))
                    if status == 0x0000:
                        self.acks.append(Ack(outgoing.sop_instance_uid, outgoing.sha256, "c-store"))
                        self.pending = None
                    elif status is None or not assoc.is_established:
                        self.interrupted += 1
                        break
                    else:
                        self.refusals[status] += 1
                        self.stop.wait(0.05)
            except (RuntimeError, OSError):
                self.interrupted += 1
            finally:
                if assoc.is_established:
                    assoc.release()


@dataclass
class StowSender:
    """STOW-RS, one instance per request, until stopped; retries across restarts."""

    base_url: str
    username: str
    password: str
    label: str
    stop: threading.Event
    acks: list[Ack] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    pending: Outgoing | None = None
    requests: int = 0

    def run(self) -> None:
        instances = Instances(self.label)
        token: str | None = None
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    if token is None:
                        token = self._token(client)
                    if self.pending is None:
                        self.pending = instances.next()
                    outgoing = self.pending
                    self.requests += 1
                    response = client.post(
                        "/dicomweb/studies",
                        content=self._body(outgoing),
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Content-Type": _CONTENT_TYPE,
                        },
                    )
                except httpx.HTTPError as exc:  # the server is down or restarting
                    self.failures[type(exc).__name__] += 1
                    self.stop.wait(0.05)
                    continue
                if response.status_code == 401:
                    token = None
                    continue
                referenced = self._referenced(response) if response.status_code in (200, 202) else set()
                if outgoing.sop_instance_uid in referenced:
                    self.acks.append(Ack(outgoing.sop_instance_uid, outgoing.sha256, "stow-rs"))
                    self.pending = None
                else:
                    self.failures[f"HTTP {response.status_code}"] += 1
                    self.stop.wait(0.05)

    def _token(self, client: httpx.Client) -> str:
        response = client.post("/api/auth/token", data={"username": self.username, "password": self.password})
        response.raise_for_status()
        return str(response.json()["access_token"])

    @staticmethod
    def _body(outgoing: Outgoing) -> bytes:
        head = f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        return head + outgoing.part10() + f"\r\n--{_BOUNDARY}--\r\n".encode()

    @staticmethod
    def _referenced(response: httpx.Response) -> set[str]:
        try:
            items = response.json().get(_REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
            return {item[_REFERENCED_SOP_INSTANCE_UID]["Value"][0] for item in items}
        except (ValueError, KeyError, IndexError, AttributeError):
            return set()


def run_threads(targets: list[Any], name: str) -> list[threading.Thread]:
    """Start ``target.run`` of each in its own thread; the threads, for joining."""
    threads = [
        threading.Thread(target=target.run, name=f"{name}-{i}", daemon=True)
        for i, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread], timeout: float) -> list[str]:
    """Join every thread within ``timeout`` seconds in all; the names of those still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]
