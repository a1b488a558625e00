"""DCMTK ``findscu -W`` against the Modality Worklist SCP: a township ultrasound fetching its day."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from teleconsult.cli import main
from teleconsult.storage.worklist import add_item, cancel_item, list_items
from tests.conftest import RunningGateway, require_tool

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

SPS = "ScheduledProcedureStepSequence"


@pytest.fixture
def worklist_gateway(start, monkeypatch: pytest.MonkeyPatch) -> RunningGateway:  # type: ignore[no-untyped-def]
    gateway = start()
    index = gateway.store.index
    common: dict[str, Any] = {
        "modality": "US",
        "scheduled_station_ae_title": "TOWNUS",
        "organisation": "TOWN01",
    }
    add_item(index, patient_id="P1", patient_name="Wang^XiaoMing=王^小明", accession_number="A1",
             patient_birth_date="19700101", patient_sex="M", scheduled_start="20261124093000",
             procedure_description="腹部超声", **common)  # fmt: skip
    add_item(index, patient_id="P2", patient_name="李^华", accession_number="A2",
             scheduled_start="20261125100000", **common)  # fmt: skip
    add_item(index, patient_id="P3", patient_name="赵^敏", accession_number="A3", modality="DX",
             scheduled_station_ae_title="TOWNDR", scheduled_start="20261124110000",
             organisation="TOWN02")  # fmt: skip
    cancelled = add_item(index, patient_id="P4", patient_name="王^取消", accession_number="A4",
                         scheduled_start="20261124120000", **common)  # fmt: skip
    cancel_item(index, cancelled.id)
    # Once through the product's command line, as the registration desk does.
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(gateway.settings.data_dir))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", gateway.settings.index_url)
    peers = [peer.model_dump() for peer in gateway.settings.dicom_peers]
    monkeypatch.setenv("TELECONSULT_DICOM_PEERS", json.dumps(peers))  # --organisation: TOWNUS's
    assert main(["worklist", "add", "--patient-id", "P5", "--patient-name", "张^伟", "--sex", "F",
                 "--accession-number", "A5", "--modality", "US", "--station-ae-title", "TOWNUS",
                 "--scheduled-start", "20261124140000"]) == 0  # fmt: skip
    return gateway  # type: ignore[no-any-return]


def _findscu(
    gateway: RunningGateway, out: Path, *keys: str | bytes, ae_title: str = "TOWNUS"
) -> tuple[list[Dataset], str]:
    """Responses of a worklist query, and findscu's log; a ``bytes`` key goes to findscu as is."""
    out.mkdir()
    args: list[str | bytes] = [require_tool("findscu"), "-W", "-v", "-aet", ae_title, "-aec", "TELECONSULT"]
    for key in keys:
        args += ["-k", key]
    args += ["-X", "-od", str(out), "127.0.0.1", str(gateway.port)]
    result = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=120, check=False)
    log = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, log
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))], log


DEVICE_KEYS = (
    f"{SPS}[0].Modality=US",
    f"{SPS}[0].ScheduledStationAETitle=TOWNUS",
    f"{SPS}[0].ScheduledProcedureStepStartDate",
    f"{SPS}[0].ScheduledProcedureStepStartTime",
    f"{SPS}[0].ScheduledProcedureStepDescription",
    f"{SPS}[0].ScheduledProcedureStepID",
    f"{SPS}[0].ScheduledProcedureStepStatus",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
)


def _by_accession(matches: list[Dataset]) -> dict[str, Dataset]:
    return {str(match.AccessionNumber): match for match in matches}


def test_ultrasound_fetches_its_day_with_chinese_names_in_utf8(
    worklist_gateway: RunningGateway, tmp_path: Path
) -> None:
    matches, log = _findscu(
        worklist_gateway,
        tmp_path / "day",
        "SpecificCharacterSet=ISO_IR 192",
        f"{SPS}[0].ScheduledProcedureStepStartDate=20261124",
        *DEVICE_KEYS[:2],
        *DEVICE_KEYS[3:],
    )
    found = _by_accession(matches)
    # A2 is tomorrow, A3 is another township's DR room, A4 was cancelled; A5 came from the CLI.
    assert set(found) == {"A1", "A5"}
    assert "WarningUnsupportedOptionalKeys" not in log

    wang = found["A1"]
    assert wang.SpecificCharacterSet == "ISO_IR 192"
    assert str(wang.PatientName) == "Wang^XiaoMing=王^小明"
    assert wang["PatientName"].value.original_string == "Wang^XiaoMing=王^小明".encode()
    assert (wang.PatientID, wang.PatientBirthDate, wang.PatientSex) == ("P1", "19700101", "M")
    expected_uid = {
        item.accession_number: item.study_instance_uid for item in list_items(worklist_gateway.store.index)
    }
    assert wang.StudyInstanceUID == expected_uid["A1"]
    assert wang.RequestedProcedureID == "A1"
    assert wang.RequestedProcedureDescription == "腹部超声"
    (step,) = wang[SPS].value
    assert step.Modality == "US"
    assert step.ScheduledStationAETitle == "TOWNUS"
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20261124",
        "093000",
    )
    assert step.ScheduledProcedureStepDescription == "腹部超声"
    assert step.ScheduledProcedureStepID == "A1"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"

    zhang = found["A5"]
    assert str(zhang.PatientName) == "张^伟"
    assert zhang.IssuerOfPatientID == "TOWN01"  # the station's organisation
    assert zhang.PatientSex == "F"
    assert zhang.StudyInstanceUID == expected_uid["A5"]
    assert zhang.RequestedProcedureDescription == ""


@pytest.mark.parametrize(
    ("date_key", "expected"),
    [
        ("20261124-20261125", {"A1", "A2", "A5"}),
        ("20261125-", {"A2"}),
        ("-20261124", {"A1", "A5"}),
        ("20261201-20261231", set()),
    ],
)
def test_date_range_matching(
    worklist_gateway: RunningGateway, tmp_path: Path, date_key: str, expected: set[str]
) -> None:
    matches, _ = _findscu(
        worklist_gateway,
        tmp_path / "range",
        f"{SPS}[0].ScheduledProcedureStepStartDate={date_key}",
        f"{SPS}[0].ScheduledStationAETitle",
        "AccessionNumber",
    )
    assert set(_by_accession(matches)) == expected


def test_station_ae_title_selects_the_dr_room_of_its_township(
    worklist_gateway: RunningGateway, tmp_path: Path
) -> None:
    matches, _ = _findscu(
        worklist_gateway,
        tmp_path / "dr",
        f"{SPS}[0].ScheduledStationAETitle=TOWNDR",
        f"{SPS}[0].Modality",
        "AccessionNumber",
        "PatientName",
        ae_title="STORESCU",
    )
    (match,) = matches
    assert match.AccessionNumber == "A3"
    assert match[SPS].value[0].Modality == "DX"
    assert "SpecificCharacterSet" in match  # the query gave none: UTF-8 because 赵 is not ASCII
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "赵^敏"
    # TOWNUS belongs to TOWN01: TOWN02's worklist is not its to see.
    from_town01, _ = _findscu(
        worklist_gateway,
        tmp_path / "dr-from-town01",
        f"{SPS}[0].ScheduledStationAETitle=TOWNDR",
        "AccessionNumber",
    )
    assert from_town01 == []


def test_cancelled_items_are_never_returned(worklist_gateway: RunningGateway, tmp_path: Path) -> None:
    matches, _ = _findscu(worklist_gateway, tmp_path / "cancelled", "AccessionNumber=A4", "PatientName")
    assert matches == []
    everything, _ = _findscu(worklist_gateway, tmp_path / "all", "AccessionNumber")
    assert set(_by_accession(everything)) == {"A1", "A2", "A5"}  # A3 is TOWN02's


def test_gb18030_query_is_answered_in_gb18030(worklist_gateway: RunningGateway, tmp_path: Path) -> None:
    matches, _ = _findscu(
        worklist_gateway,
        tmp_path / "gb18030",
        "SpecificCharacterSet=GB18030",
        "PatientName=王*".encode("gb18030"),
        "AccessionNumber",
        f"{SPS}[0].ScheduledProcedureStepDescription",
    )
    (match,) = matches  # A4 (王^取消) is cancelled
    assert match.AccessionNumber == "A1"
    assert match.SpecificCharacterSet == "GB18030"
    assert match["PatientName"].value.original_string == "Wang^XiaoMing=王^小明".encode("gb18030")
    assert str(match.PatientName) == "Wang^XiaoMing=王^小明"
    assert match[SPS].value[0].ScheduledProcedureStepDescription == "腹部超声"


def test_empty_sequence_key_returns_the_whole_step_and_unsupported_keys_warn(
    worklist_gateway: RunningGateway, tmp_path: Path
) -> None:
    matches, log = _findscu(
        worklist_gateway,
        tmp_path / "universal",
        "AccessionNumber=A1",
        SPS,
        "PatientWeight=70",  # a matching value on a key we do not match on: FF01
        "ReferencedStudySequence",
    )
    (match,) = matches
    assert "Pending: WarningUnsupportedOptionalKeys" in log
    (step,) = match[SPS].value
    assert step.ScheduledStationAETitle == "TOWNUS"
    assert step.ScheduledProcedureStepStartDate == "20261124"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert "PatientWeight" in match
    assert match.PatientWeight is None  # unsupported keys come back empty
    assert len(match.ReferencedStudySequence) == 0
