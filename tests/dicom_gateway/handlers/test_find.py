"""C-FIND handler details that a real peer cannot trigger deterministically."""

from __future__ import annotations

from types import SimpleNamespace

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS

from dicom_gateway.ae import GatewayContext
from dicom_gateway.handlers.find import FIND_STATUSES, handle_find
from dicom_gateway.handlers.get import GET_STATUSES
from dicom_gateway.handlers.move import MOVE_STATUSES
from dicom_gateway.query import STUDY_ROOT_FIND
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image


class _FakeFindEvent:
    """The few attributes of pynetdicom's Event that handle_find reads."""

    def __init__(self, identifier: Dataset, cancel_after: int | None) -> None:
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND)
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="TOWNUS"))
        self._cancel_after = cancel_after
        self._checks = 0

    @property
    def is_cancelled(self) -> bool:
        self._checks += 1
        return self._cancel_after is not None and self._checks > self._cancel_after


def _event(identifier: Dataset, cancel_after: int | None = None) -> _FakeFindEvent:
    return _FakeFindEvent(identifier, cancel_after)


def _study_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    return ds


def test_c_cancel_stops_the_matches(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    for seed in range(5):
        store.store_instance(
            encode(make_image(seed=seed)),
            ExplicitVRLittleEndian,
            calling_ae_title="T",
            source_organisation="TOWN01",
        )
    context = GatewayContext(settings=app_settings, store=store)

    responses = list(handle_find(_event(_study_query(), cancel_after=2), context))

    assert [status for status, _ in responses] == [0xFF00, 0xFF00, 0xFE00]


def test_all_matches_without_cancel(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        store.store_instance(
            encode(make_image(seed=seed)),
            ExplicitVRLittleEndian,
            calling_ae_title="T",
            source_organisation="TOWN01",
        )
    context = GatewayContext(settings=app_settings, store=store)
    responses = list(handle_find(_event(_study_query()), context))
    assert [status for status, _ in responses] == [0xFF00] * 3
    assert all(identifier.QueryRetrieveLevel == "STUDY" for _, identifier in responses)


def test_missing_level_is_a900(store: InstanceStore, app_settings) -> None:  # type: ignore[no-untyped-def]
    context = GatewayContext(settings=app_settings, store=store)
    identifier = Dataset()
    identifier.PatientID = "X"
    ((status, _),) = list(handle_find(_event(identifier), context))
    assert status.Status == 0xA900


def test_statuses_are_query_retrieve_statuses() -> None:
    for code in FIND_STATUSES:
        assert (
            code in QR_FIND_SERVICE_CLASS_STATUS
            or code in (0x0000, 0xFF00, 0xFE00)
            or (0xC000 <= code <= 0xCFFF)
        ), hex(code)
    assert 0xA801 in MOVE_STATUSES
    assert 0xA801 not in GET_STATUSES
