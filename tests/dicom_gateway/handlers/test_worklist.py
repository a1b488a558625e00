"""Modality Worklist handler details a real peer cannot trigger deterministically."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.status import MODALITY_WORKLIST_SERVICE_CLASS_STATUS

from dicom_gateway.ae import GatewayContext
from dicom_gateway.handlers.worklist import (
    MODALITY_WORKLIST_FIND,
    WORKLIST_STATUSES,
    dispatch_find,
    handle_worklist,
)
from dicom_gateway.query import STUDY_ROOT_FIND
from teleconsult.storage.store import InstanceStore
from teleconsult.storage.worklist import add_item

DOC = Path(__file__).resolve().parents[3] / "docs" / "conformance.md"
SPS = "ScheduledProcedureStepSequence"


class _FakeFindEvent:
    """The few attributes of pynetdicom's Event that the C-FIND handlers read."""

    def __init__(self, identifier: Dataset, cancel_after: int | None = None, sop_class: str = "") -> None:
        self.identifier = identifier
        sop_class = sop_class or MODALITY_WORKLIST_FIND
        self.request = SimpleNamespace(AffectedSOPClassUID=sop_class)
        self.context = SimpleNamespace(abstract_syntax=sop_class)
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="TOWNUS"))
        self._cancel_after = cancel_after
        self._checks = 0

    @property
    def is_cancelled(self) -> bool:
        self._checks += 1
        return self._cancel_after is not None and self._checks > self._cancel_after


def _schedule(store: InstanceStore, count: int = 1, **overrides: Any) -> None:
    for number in range(count):
        values: dict[str, Any] = {
            "patient_id": f"P{number}",
            "patient_name": "Wang^XiaoMing=王^小明",
            "accession_number": f"A{number}",
            "modality": "US",
            "scheduled_station_ae_title": "TOWNUS",
            "scheduled_start": f"2026112409{number:02d}00",
            "organisation": "TOWN01",  # TOWNUS's, so within its query scope
        }
        values.update(overrides)
        add_item(store.index, **values)


def _query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.AccessionNumber = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _run(store: InstanceStore, settings: Any, identifier: Dataset, **kwargs: Any) -> list[Any]:
    context = GatewayContext(settings=settings, store=store)
    return list(handle_worklist(_FakeFindEvent(identifier, **kwargs), context))  # type: ignore[arg-type]


def test_c_cancel_stops_the_matches(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    _schedule(store, 5)
    responses = _run(store, app_settings, _query(), cancel_after=2)
    assert [status for status, _ in responses] == [0xFF00, 0xFF00, 0xFE00]


def test_sequence_with_two_items_is_a900(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    identifier = _query()
    identifier.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    ((status, _),) = _run(store, app_settings, identifier)
    assert status.Status == 0xA900
    assert len(status.ErrorComment) <= 64


def test_unreadable_identifier_is_c000(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    class Broken(SimpleNamespace):
        def __iter__(self) -> Any:
            raise ValueError("truncated")

    ((status, _),) = _run(store, app_settings, Broken())  # type: ignore[arg-type]
    assert status.Status == 0xC000


def test_unsupported_matching_value_is_ff01(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    _schedule(store, 2)
    identifier = _query(PatientWeight="70")
    step = Dataset()
    step.ScheduledPerformingPhysicianName = "Li*"  # not matched on: ignored, with a warning
    step.Modality = "US"
    identifier.ScheduledProcedureStepSequence = [step]
    responses = _run(store, app_settings, identifier)
    assert [status for status, _ in responses] == [0xFF01, 0xFF01]
    _, match = responses[0]
    assert match.PatientWeight is None
    assert match[SPS].value[0].ScheduledPerformingPhysicianName is None
    assert match[SPS].value[0].Modality == "US"


def test_empty_sequence_returns_every_step_attribute(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    _schedule(store, procedure_description="Abdomen")
    identifier = _query()
    identifier.ScheduledProcedureStepSequence = []
    ((status, match),) = _run(store, app_settings, identifier)
    assert status == 0xFF00
    (step,) = match[SPS].value
    assert [element.keyword for element in step] == [
        "Modality",
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepStatus",
    ]
    assert step.ScheduledProcedureStepDescription == "Abdomen"


@pytest.mark.parametrize(
    ("query_charset", "name", "expected"),
    [
        ("GB18030", "王^小明", "GB18030"),
        ("GBK", "王^小明", "GBK"),
        ("GBK", "𠀀^小明", "ISO_IR 192"),  # outside GBK: UTF-8 rather than a lossy answer
        ("ISO_IR 192", "王^小明", "ISO_IR 192"),
        ("ISO_IR 100", "王^小明", "ISO_IR 192"),
        (None, "王^小明", "ISO_IR 192"),
        (None, "Wang^XiaoMing", None),
    ],
)
def test_response_character_set(
    store: InstanceStore,
    app_settings,  # type: ignore[no-untyped-def]
    query_charset: str | None,
    name: str,
    expected: str | None,
) -> None:
    _schedule(store, patient_name=name)
    identifier = _query()
    if query_charset is not None:
        identifier.SpecificCharacterSet = query_charset
    ((_, match),) = _run(store, app_settings, identifier)
    assert match.get("SpecificCharacterSet") == expected
    assert str(match.PatientName) == name


def test_other_organisations_items_are_not_offered(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    _schedule(store, 1)
    add_item(
        store.index,
        patient_id="Q1",
        patient_name="李^华",
        accession_number="B1",
        modality="US",
        scheduled_station_ae_title="TOWNUS",
        organisation="TOWN02",
    )
    responses = _run(store, app_settings, _query())
    assert [match.AccessionNumber for _, match in responses] == ["A0"]


def test_dispatch_sends_query_retrieve_to_handle_find(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    context = GatewayContext(settings=app_settings, store=store)
    identifier = Dataset()
    identifier.PatientID = "X"  # no Query/Retrieve Level: handle_find answers A900
    event = _FakeFindEvent(identifier, sop_class=STUDY_ROOT_FIND)
    ((status, _),) = list(dispatch_find(event, context))  # type: ignore[arg-type]
    assert status.Status == 0xA900
    _schedule(store)
    worklist_event = _FakeFindEvent(_query())
    assert [s for s, _ in dispatch_find(worklist_event, context)] == [0xFF00]  # type: ignore[arg-type]


def _section(text: str, title: str) -> str:
    """The conformance statement's "## N. <title> ..." section, up to the next one."""
    match = re.search(rf"^## \d+\. {re.escape(title)}.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section {title!r} in {DOC}"
    return match.group(0)


def test_statuses_are_worklist_statuses_and_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = _section(text, "Modality Worklist")
    for code in WORKLIST_STATUSES:
        assert code in MODALITY_WORKLIST_SERVICE_CLASS_STATUS, hex(code)
        assert f"0x{code:04X}" in section, hex(code)
    assert f"`{MODALITY_WORKLIST_FIND}`" in text
