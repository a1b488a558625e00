"""The modality worklist store: creating, listing, cancelling, matching (as C-FIND does)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.cli import main
from teleconsult.config import Settings
from teleconsult.domain.uids import is_valid_uid
from teleconsult.errors import InvalidUIDError, NotFoundError
from teleconsult.events import EventBus
from teleconsult.storage.index import Index
from teleconsult.storage.store import InstanceStore
from teleconsult.storage.tables import Base
from teleconsult.storage.worklist import (
    InvalidWorklistItemError,
    WorklistStatus,
    add_item,
    cancel_item,
    get_item,
    list_items,
    query_items,
)
from tests.factories import encode, make_image


def _add(index: Index, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "patient_id": "P1",
        "patient_name": "Wang^XiaoMing=王^小明",
        "accession_number": "A1",
        "modality": "US",
        "scheduled_station_ae_title": "TOWNUS",
        "scheduled_start": "20261124093000",
        "organisation": "TOWN01",
    }
    values.update(overrides)
    return add_item(index, **values)


def _accessions(index: Index, keys: dict[str, str], **kwargs: Any) -> set[str]:
    return {item.accession_number for item in query_items(index, keys, **kwargs)}


# -- creating, listing, cancelling -----------------------------------------------


def test_add_fills_defaults_and_reads_back(store: InstanceStore) -> None:
    item = _add(
        store.index,
        patient_birth_date="19700101",
        patient_sex="f",
        procedure_description="腹部超声",
        organisation="TOWN01",
        modality="us",
    )
    assert item.status is WorklistStatus.SCHEDULED
    assert item.patient_name == "Wang^XiaoMing=王^小明"
    assert item.patient_sex == "F"
    assert item.modality == "US"
    assert (item.scheduled_start_date, item.scheduled_start_time) == ("20261124", "093000")
    # one step per order: both IDs default to the accession number
    assert item.requested_procedure_id == item.scheduled_procedure_step_id == "A1"
    assert is_valid_uid(item.study_instance_uid)
    assert item.study_instance_uid.startswith("2.25.")
    assert get_item(store.index, item.id) == item
    assert list_items(store.index) == [item]
    assert json.loads(json.dumps(item.as_json()))["status"] == "SCHEDULED"


def test_given_ids_uid_root_and_default_start(store: InstanceStore) -> None:
    before = datetime.now()
    item = _add(
        store.index,
        scheduled_start=None,
        requested_procedure_id="RP7",
        uid_root="1.2.826.0.1.3680043.10.999",
    )
    assert item.requested_procedure_id == item.scheduled_procedure_step_id == "RP7"
    assert item.study_instance_uid.startswith("1.2.826.0.1.3680043.10.999.")
    after = datetime.now()
    assert item.scheduled_start_date in {before.strftime("%Y%m%d"), after.strftime("%Y%m%d")}
    given = _add(
        store.index, accession_number="A2", study_instance_uid="1.2.3.4", scheduled_start="202611241000"
    )
    assert (given.study_instance_uid, given.scheduled_start_time) == ("1.2.3.4", "100000")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"accession_number": ""}, "accession number"),
        ({"accession_number": "A" * 17}, "accession number"),
        ({"patient_id": ""}, "patient ID"),
        ({"patient_name": "王^小明\\李^华"}, "patient name"),
        ({"patient_name": "a=b=c=d"}, "patient name"),
        ({"patient_name": "王" * 65}, "patient name"),
        ({"patient_sex": "X"}, "patient sex"),
        ({"patient_birth_date": "19701301"}, "patient birth date"),
        ({"patient_birth_date": "1970-01-01"}, "patient birth date"),
        ({"scheduled_start": "2026112409"}, "scheduled start"),
        ({"scheduled_start": "20261124250000"}, "scheduled start"),
        ({"modality": "U-S"}, "modality"),
        ({"scheduled_station_ae_title": "WAY_TOO_LONG_AE_TITLE"}, "scheduled station AE title"),
        ({"scheduled_station_ae_title": "   "}, "scheduled station AE title"),
        ({"procedure_description": "x" * 65}, "procedure description"),
        ({"organisation": ""}, "organisation"),
    ],
)
def test_invalid_values_are_refused_naming_the_field_not_the_value(
    store: InstanceStore, overrides: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidWorklistItemError) as refused:
        _add(store.index, **overrides)
    assert field in refused.value.message
    assert "王" not in refused.value.message
    assert len(refused.value.comment) <= 64
    assert list_items(store.index, include_cancelled=True) == []


def test_invalid_study_uid_is_refused(store: InstanceStore) -> None:
    with pytest.raises(InvalidUIDError):
        _add(store.index, study_instance_uid="1.2.03")


def test_accession_number_is_scheduled_once_per_organisation(store: InstanceStore) -> None:
    first = _add(store.index, organisation="TOWN01")
    with pytest.raises(InvalidWorklistItemError, match="already scheduled"):
        _add(store.index, organisation="TOWN01", patient_id="P2")
    _add(store.index, organisation="TOWN02")  # another township's numbering
    cancel_item(store.index, first.id)
    again = _add(store.index, organisation="TOWN01")
    assert again.id != first.id


def test_cancel_is_kept_on_record_and_idempotent(store: InstanceStore) -> None:
    item = _add(store.index)
    cancelled = cancel_item(store.index, item.id)
    assert cancelled.status is WorklistStatus.CANCELLED
    assert cancelled.cancelled_at is not None
    assert cancel_item(store.index, item.id).cancelled_at == cancelled.cancelled_at
    assert list_items(store.index) == []
    assert [i.id for i in list_items(store.index, include_cancelled=True)] == [item.id]
    assert query_items(store.index, {}) == []
    with pytest.raises(NotFoundError):
        cancel_item(store.index, item.id + 100)


# -- matching ---------------------------------------------------------------------


@pytest.fixture
def scheduled(store: InstanceStore) -> Index:
    index = store.index
    common = {"organisation": "TOWN01"}
    _add(index, accession_number="A1", patient_name="Wang^XiaoMing=王^小明", patient_id="P1", **common,
         patient_birth_date="19700101", patient_sex="M", procedure_description="Abdomen 腹部",
         scheduled_start="20261124083000")  # fmt: skip
    _add(index, accession_number="A2", patient_name="王^小红", patient_id="P2", patient_sex="F", **common,
         scheduled_start="20261124143000")  # fmt: skip
    _add(index, accession_number="A3", patient_name="Li^Hua=李^华", patient_id="P3", modality="DX", **common,
         scheduled_station_ae_title="TOWNDR", scheduled_start="20261125090000")  # fmt: skip
    _add(index, accession_number="A4", patient_name="Zhang^Wei", patient_id="P4", organisation="TOWN02",
         scheduled_start="20261201100000")  # fmt: skip
    cancel_item(index, _add(index, accession_number="A5", patient_name="王^取消", patient_id="P5").id)
    return index


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, {"A1", "A2", "A3", "A4"}),
        ({"PatientName": ""}, {"A1", "A2", "A3", "A4"}),
        ({"PatientName": "王*"}, {"A1", "A2"}),  # ideographic group of A1, only group of A2
        ({"PatientName": "wang*"}, {"A1"}),  # case-insensitive
        ({"PatientName": "*^小?"}, {"A1", "A2"}),
        ({"PatientName": "=李^华"}, {"A3"}),  # one component group
        ({"PatientName": "Wang^XiaoMing=王^小明"}, {"A1"}),
        ({"PatientName": "王^取消"}, set()),  # cancelled items never match
        ({"PatientID": "P?"}, {"A1", "A2", "A3", "A4"}),
        ({"PatientID": "p1"}, set()),  # LO is case-sensitive
        ({"PatientBirthDate": "19600101-19801231"}, {"A1"}),
        ({"PatientSex": "F"}, {"A2"}),
        ({"AccessionNumber": "A3"}, {"A3"}),
        ({"Modality": "DX"}, {"A3"}),
        ({"Modality": "US\\DX"}, {"A1", "A2", "A3", "A4"}),
        ({"ScheduledStationAETitle": "TOWNUS"}, {"A1", "A2", "A4"}),
        ({"ScheduledStationAETitle": "TOWN*"}, {"A1", "A2", "A3", "A4"}),
        ({"ScheduledProcedureStepStartDate": "20261124"}, {"A1", "A2"}),
        ({"ScheduledProcedureStepStartDate": "20261124-20261125"}, {"A1", "A2", "A3"}),
        ({"ScheduledProcedureStepStartDate": "20261125-"}, {"A3", "A4"}),
        ({"ScheduledProcedureStepStartDate": "-20261124"}, {"A1", "A2"}),
        ({"ScheduledProcedureStepStartTime": "080000-120000"}, {"A1", "A3", "A4"}),
        ({"ScheduledProcedureStepStartTime": "14-"}, {"A2"}),
        ({"ScheduledProcedureStepStatus": "SCHEDULED"}, {"A1", "A2", "A3", "A4"}),
        ({"ScheduledProcedureStepStatus": "CANCELLED"}, set()),
        ({"ScheduledProcedureStepDescription": "abdomen*"}, {"A1"}),
        ({"RequestedProcedureDescription": "*腹部"}, {"A1"}),
        ({"RequestedProcedureID": "A2"}, {"A2"}),
        ({"ScheduledProcedureStepID": "A4"}, {"A4"}),
        ({"IssuerOfPatientID": "TOWN02"}, {"A4"}),
        ({"PatientWeight": "70"}, {"A1", "A2", "A3", "A4"}),  # keys we do not match on are ignored
        ({"Modality": "US", "ScheduledProcedureStepStartDate": "20261124"}, {"A1", "A2"}),
    ],
)
def test_query_matching(scheduled: Index, keys: dict[str, str], expected: set[str]) -> None:
    assert _accessions(scheduled, keys) == expected


def test_query_by_study_uid_list_and_organisation_scope(scheduled: Index) -> None:
    items = {item.accession_number: item for item in list_items(scheduled)}
    uids = f"{items['A1'].study_instance_uid}\\{items['A4'].study_instance_uid}"
    assert _accessions(scheduled, {"StudyInstanceUID": uids}) == {"A1", "A4"}
    assert _accessions(scheduled, {}, organisations=["TOWN02"]) == {"A4"}
    assert _accessions(scheduled, {}, organisations=[]) == set()


def test_results_come_in_scheduled_order(scheduled: Index) -> None:
    assert [item.accession_number for item in query_items(scheduled, {})] == ["A1", "A2", "A3", "A4"]


# -- the same person name matching as C-FIND --------------------------------------

NAMES = [
    "Wang^XiaoMing=王^小明",
    "王^小红",
    "Wang^Fang=王^芳",
    "Li^Hua=李^华",
    "李^小明",
    "Zhang^Wei",
    "ZHANG^WEI^^DR",
    "100%^Sure",
    "Under_Score^X",
]
ALPHABET = sorted({c for name in NAMES for c in name if c not in "=^"} | {"*", "?", "^", "="})


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceStore]:
    """Each name stored once as an instance (C-FIND's index) and once as a worklist item."""
    root: Path = tmp_path_factory.mktemp("worklist-matching")
    store = InstanceStore(Settings(data_dir=root), EventBus())
    store.open()
    for number, name in enumerate(NAMES):
        ds = make_image(charset="ISO_IR 192", patient_name=name, patient_id=f"ID{number}")
        store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="T"
        )
        _add(store.index, patient_name=name, patient_id=f"ID{number}", accession_number=f"A{number}")
    yield store
    store.close()


@given(st.text(alphabet=ALPHABET, min_size=1, max_size=8))
def test_person_name_matching_agrees_with_c_find(both: InstanceStore, pattern: str) -> None:
    c_find = {row["PatientID"] for row in both.index.query("PATIENT", {"PatientName": pattern})}
    worklist = {item.patient_id for item in query_items(both.index, {"PatientName": pattern})}
    assert worklist == c_find


# -- schema ------------------------------------------------------------------------


def test_migration_creates_the_table_as_declared(store: InstanceStore) -> None:
    with store.index.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "worklist" in repr(diff)] == []


# -- CLI ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, app_settings: Settings) -> Settings:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(app_settings.data_dir))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", app_settings.index_url)
    return app_settings


def test_cli_add_list_cancel(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["worklist", "add", "--patient-id", "P9", "--patient-name", "周^杰", "--birth-date", "19800203"]
    args += ["--sex", "M", "--accession-number", "ACC9", "--modality", "US", "--station-ae-title", "TOWNUS"]
    args += ["--scheduled-start", "20261124100000", "--procedure-description", "心脏超声"]
    args += ["--requested-procedure-id", "RP9", "--organisation", "TOWN01", "--study-instance-uid", "1.2.3.9"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ACC9" in out
    assert "1.2.3.9" in out

    assert main(["worklist", "list", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["patient_name"] == "周^杰"
    assert item["procedure_description"] == "心脏超声"
    assert item["scheduled_start_date"] == "20261124"
    assert item["requested_procedure_id"] == "RP9"
    assert item["status"] == "SCHEDULED"

    assert main(["worklist", "list"]) == 0
    assert "周^杰" in capsys.readouterr().out

    assert main(["worklist", "cancel", str(item["id"])]) == 0
    capsys.readouterr()
    assert main(["worklist", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["worklist", "list", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "CANCELLED"


def test_cli_errors_exit_1_with_a_sentence(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worklist", "cancel", "4711"]) == 1
    assert "worklist item 4711 does not exist" in capsys.readouterr().err
    args = ["worklist", "add", "--patient-id", "P1", "--patient-name", "王^小明", "--accession-number", "A1"]
    args += ["--modality", "US", "--station-ae-title", "TOWNUS"]
    assert main([*args, "--organisation", "TOWN01", "--sex", "X"]) == 1
    assert "patient sex must be M, F or O" in capsys.readouterr().err
    assert main(args) == 1  # TOWNUS is not a configured peer here: whose patient is it?
    assert "give --organisation" in capsys.readouterr().err


def test_cli_organisation_defaults_to_the_station_s(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
    monkeypatch.setenv("TELECONSULT_DICOM_PEERS", json.dumps(peers))
    args = ["worklist", "add", "--patient-id", "P1", "--patient-name", "王^小明", "--accession-number", "A1"]
    assert main([*args, "--modality", "US", "--station-ae-title", "TOWNUS"]) == 0
    capsys.readouterr()
    assert main(["worklist", "list", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["organisation"] == "TOWN01"
