"""DCMTK findscu, movescu and getscu against the gateway: PACS-style query/retrieve."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from teleconsult.storage import deflated
from teleconsult.storage.identity import IdentityStore
from tests.conftest import RunningGateway, require_tool
from tests.factories import CT_IMAGE, encode, make_image

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def move_port() -> int:
    return _free_port()


@pytest.fixture
def pacs_gateway(start, move_port: int) -> RunningGateway:  # type: ignore[no-untyped-def]
    peers = [
        {"ae_title": name, "host": "127.0.0.1", "port": port, "organisation": org}
        for name, port, org in (
            ("TOWNUS", 104, "TOWN01"),
            ("FINDSCU", 104, "COUNTY"),
            ("GETSCU", 104, "COUNTY"),
            ("MOVESCU", move_port, "COUNTY"),
        )
    ]
    gateway = start(dicom_peers=peers)
    # The county peers see the township's studies through the organisation tree.
    identity = IdentityStore(gateway.store.index.engine)
    identity.add_organisation("COUNTY", "County Hospital")
    identity.add_organisation("TOWN01", "Township 1", "COUNTY")
    _populate(gateway)
    return gateway


STUDY_A = generate_uid()
STUDY_B = generate_uid()
SERIES_A1 = generate_uid()
SERIES_A2 = generate_uid()


def _populate(gateway: RunningGateway) -> None:
    put = gateway.store.store_instance
    for number in range(3):
        ds = make_image(
            charset="GB18030",
            patient_name="Wang^XiaoMing=王^小明",
            patient_id="P1",
            study_instance_uid=STUDY_A,
            series_instance_uid=SERIES_A1,
            seed=number,
        )
        ds.InstanceNumber = number + 1
        put(encode(ds), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01")
    ct = make_image(
        CT_IMAGE,
        charset="GB18030",
        patient_name="Wang^XiaoMing=王^小明",
        patient_id="P1",
        study_instance_uid=STUDY_A,
        series_instance_uid=SERIES_A2,
        modality="CT",
    )
    ct.SeriesNumber = 2
    put(encode(ct), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01")
    other = make_image(
        charset="ISO_IR 192", patient_name="李^华", patient_id="P2", study_instance_uid=STUDY_B
    )
    other.StudyDate = "20250101"
    put(encode(other), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01")


def _run(args: list[str | bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120, check=False)


def _findscu(gateway: RunningGateway, out: Path, model: str, *keys: str | bytes) -> list:  # type: ignore[type-arg]
    """Matches of a findscu query; a ``bytes`` key is passed to findscu as is (e.g. GB18030)."""
    out.mkdir(exist_ok=True)
    args: list[str | bytes] = [
        require_tool("findscu"),
        model,
        "-aet",
        "FINDSCU",
        "-aec",
        "TELECONSULT",
        "-X",
        "-od",
        str(out),
    ]
    for key in keys:
        args += ["-k", key]
    result = _run([*args, "127.0.0.1", str(gateway.port)])
    assert result.returncode == 0, result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.parametrize("charset", ["GB18030", "ISO_IR 192"])
def test_study_level_find_by_chinese_name_returns_it_in_its_character_set(
    pacs_gateway: RunningGateway, tmp_path: Path, charset: str
) -> None:
    python_codec = {"GB18030": "gb18030", "ISO_IR 192": "utf-8"}[charset]
    matches = _findscu(
        pacs_gateway,
        tmp_path / "find",
        "-S",
        f"SpecificCharacterSet={charset}",
        "QueryRetrieveLevel=STUDY",
        "PatientName=王*".encode(python_codec),
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "PatientID",
        "StudyDate",
        "OtherPatientIDsSequence",
    )
    assert len(matches) == 1
    (match,) = matches
    assert match.StudyInstanceUID == STUDY_A
    assert str(match.PatientName) == "Wang^XiaoMing=王^小明"
    assert match.SpecificCharacterSet == charset
    assert list(match.ModalitiesInStudy) == ["CT", "US"]
    assert int(match.NumberOfStudyRelatedInstances) == 4
    assert int(match.NumberOfStudyRelatedSeries) == 2
    assert match.RetrieveAETitle == "TELECONSULT"
    assert "OtherPatientIDsSequence" in match, "unsupported keys come back empty"


def test_find_matching_rules(pacs_gateway: RunningGateway, tmp_path: Path) -> None:
    def study_uids(*keys: str) -> set[str]:
        folder = tmp_path / f"q{len(list(tmp_path.iterdir()))}"
        found = _findscu(pacs_gateway, folder, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys)
        return {str(m.StudyInstanceUID) for m in found}

    assert study_uids() == {STUDY_A, STUDY_B}
    assert study_uids("StudyDate=20261101-20261130") == {STUDY_A}
    assert study_uids("StudyDate=-20251231") == {STUDY_B}
    assert study_uids("StudyDate=20250101") == {STUDY_B}
    assert study_uids("PatientID=P?") == {STUDY_A, STUDY_B}
    assert study_uids("ModalitiesInStudy=CT") == {STUDY_A}
    assert study_uids("ModalitiesInStudy=MR\\CT") == {STUDY_A}
    assert study_uids(f"StudyInstanceUID={STUDY_B}\\{STUDY_A}") == {STUDY_A, STUDY_B}
    assert study_uids("PatientName=wang*") == {STUDY_A}
    assert study_uids("SpecificCharacterSet=ISO_IR 192", "PatientName=李^华") == {STUDY_B}
    assert study_uids("AccessionNumber=NOPE") == set()


def test_series_image_and_patient_levels(pacs_gateway: RunningGateway, tmp_path: Path) -> None:
    series = _findscu(
        pacs_gateway,
        tmp_path / "series",
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={STUDY_A}",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    )
    assert [(s.Modality, int(s.NumberOfSeriesRelatedInstances)) for s in series] == [("US", 3), ("CT", 1)]
    images = _findscu(
        pacs_gateway,
        tmp_path / "images",
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={STUDY_A}",
        f"SeriesInstanceUID={SERIES_A1}",
        "SOPInstanceUID",
        "InstanceNumber",
        "SOPClassUID",
    )
    assert [int(i.InstanceNumber) for i in images] == [1, 2, 3]
    patients = _findscu(
        pacs_gateway,
        tmp_path / "patients",
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
    )
    assert sorted((str(p.PatientID), int(p.NumberOfPatientRelatedStudies)) for p in patients) == [
        ("P1", 1),
        ("P2", 1),
    ]


def test_patient_level_in_study_root_is_refused(pacs_gateway: RunningGateway, tmp_path: Path) -> None:
    result = _run(
        [
            require_tool("findscu"),
            "-S",
            "-v",
            "-aet",
            "FINDSCU",
            "-aec",
            "TELECONSULT",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
            "127.0.0.1",
            str(pacs_gateway.port),
        ]
    )
    assert "DataSetDoesNotMatchSOPClass" in result.stderr, result.stderr


def test_movescu_study_to_itself(pacs_gateway: RunningGateway, tmp_path: Path, move_port: int) -> None:
    out = tmp_path / "moved"
    out.mkdir()
    result = _run(
        [
            require_tool("movescu"),
            "-S",
            "-v",
            "-aet",
            "MOVESCU",
            "-aem",
            "MOVESCU",
            "-aec",
            "TELECONSULT",
            "--port",
            str(move_port),
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={STUDY_A}",
            "127.0.0.1",
            str(pacs_gateway.port),
        ]
    )
    assert result.returncode == 0, result.stderr
    received = [dcmread(path) for path in out.iterdir()]
    assert len(received) == 4
    assert {str(ds.StudyInstanceUID) for ds in received} == {STUDY_A}
    assert {str(ds.PatientName) for ds in received} == {"Wang^XiaoMing=王^小明"}


def test_movescu_to_unknown_destination_gets_a801(pacs_gateway: RunningGateway) -> None:
    result = _run(
        [
            require_tool("movescu"),
            "-S",
            "-v",
            "-aet",
            "MOVESCU",
            "-aem",
            "NOWHERE",
            "-aec",
            "TELECONSULT",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={STUDY_A}",
            "127.0.0.1",
            str(pacs_gateway.port),
        ]
    )
    assert "Refused: MoveDestinationUnknown" in result.stderr, result.stderr


def _getscu_series_a1(gateway: RunningGateway, out: Path) -> subprocess.CompletedProcess[str]:
    """getscu of series A1 (Study Root, SERIES level) into ``out``."""
    out.mkdir()
    return _run(
        [
            require_tool("getscu"),
            "-S",
            "-v",
            "-aet",
            "GETSCU",
            "-aec",
            "TELECONSULT",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={STUDY_A}",
            "-k",
            f"SeriesInstanceUID={SERIES_A1}",
            "127.0.0.1",
            str(gateway.port),
        ]
    )


def test_getscu_series(pacs_gateway: RunningGateway, tmp_path: Path) -> None:
    out = tmp_path / "got"
    result = _getscu_series_a1(pacs_gateway, out)
    assert result.returncode == 0, result.stderr
    received = sorted(dcmread(path).InstanceNumber for path in out.iterdir())
    assert received == [1, 2, 3]


def test_getscu_gets_everything_but_a_deflate_bomb(
    pacs_gateway: RunningGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stored deflated data set inflating past the limit is a failed sub-operation, not gigabytes."""
    bomb = make_image(
        patient_id="P1", study_instance_uid=STUDY_A, series_instance_uid=SERIES_A1, rows=2048, columns=2048
    )
    bomb.PixelData = bytes(len(bomb.PixelData))  # 4 MiB of zeros, a few KiB deflated
    bomb.InstanceNumber = 4
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data_set = deflater.compress(encode(bomb)) + deflater.flush()
    pacs_gateway.store.store_instance(
        data_set, DeflatedExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    monkeypatch.setattr(deflated, "MAX_INFLATED_BYTES", 1 << 20)
    out = tmp_path / "got"
    result = _getscu_series_a1(pacs_gateway, out)
    assert result.returncode == 0, result.stderr
    assert sorted(dcmread(path).InstanceNumber for path in out.iterdir()) == [1, 2, 3]
    summary = result.stdout + result.stderr
    # Before: a final Success with "Remaining 1" (pynetdicom dropped the sub-operation unseen).
    assert "DIMSE status is: Warning: SubOperationsCompleteOneOrMoreFailures" in summary, summary[-2000:]
    assert re.search(r"Number of Remaining Suboperations\s*:\s*0\b", summary), summary[-2000:]
    assert re.search(r"Number of Failed Suboperations\s*:\s*1\b", summary), summary[-2000:]
    # The final response carries the Failed SOP Instance UID List, which getscu 3.6.7 does not read
    # (it then reports "DUL P-Data PDU arrived" on release); the gateway's log names the instance.
    assert f"stored file of {bomb.SOPInstanceUID} not sent" in caplog.text


def test_retrieve_without_unique_key_is_refused(pacs_gateway: RunningGateway, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = _run(
        [
            require_tool("getscu"),
            "-S",
            "-v",
            "-aet",
            "GETSCU",
            "-aec",
            "TELECONSULT",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=P1",
            "127.0.0.1",
            str(pacs_gateway.port),
        ]
    )
    assert list(out.iterdir()) == []
    assert "DataSetDoesNotMatchSOPClass" in result.stderr, result.stderr
