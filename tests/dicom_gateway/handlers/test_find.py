"""C-FIND handler details that a real peer cannot trigger deterministically."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, dsutils
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS

from dicom_gateway.ae import GatewayContext
from dicom_gateway.handlers.find import FIND_STATUSES, handle_find
from dicom_gateway.handlers.get import GET_STATUSES
from dicom_gateway.handlers.move import MOVE_STATUSES
from dicom_gateway.query import STUDY_ROOT_FIND, encoded_response, parse_identifier, response_dataset
from dicom_gateway.sop_classes import UNCOMPRESSED_TRANSFER_SYNTAXES
from teleconsult.storage.matching import ATTRIBUTES
from teleconsult.storage.store import InstanceStore
from tests.conftest import RunningGateway
from tests.factories import encode, make_image


class _FakeFindEvent:
    """The few attributes of pynetdicom's Event that handle_find reads."""

    def __init__(self, identifier: Dataset, cancel_after: int | None) -> None:
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND)
        self.context = SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian)
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


# -- responses encoded once (encoded_response) -------------------------------------

TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
_TEXT = st.text(
    alphabet=st.sampled_from([*"AZaz09 ^=-.'_%\\", *"王小明李华张伟心脏超声胸部正位镇卫生院"]), max_size=12
)
_ASCII_TEXT = st.text(alphabet=st.sampled_from([*"AZ09 .-\\"]), max_size=10)
# What Index.query returns for a study-level row: strings, integers for counts, "" when empty.
_STUDY_ROW = st.fixed_dictionaries(
    {
        "PatientName": _TEXT,
        "PatientID": _TEXT,
        "PatientBirthDate": st.sampled_from(["", "19800101", "1980"]),
        "PatientSex": st.sampled_from(["", "M", "F", "O"]),
        "StudyInstanceUID": st.sampled_from(["2.25.1", "2.25.12", "1.2.840.10008.5.1.4.1.1.6.1"]),
        "StudyDate": st.sampled_from(["", "20251231", "2025.12.31"]),
        "StudyTime": st.sampled_from(["", "101010", "1010", "101010.123456"]),
        "AccessionNumber": _TEXT,
        "StudyID": _ASCII_TEXT,
        "StudyDescription": _TEXT,
        "ReferringPhysicianName": _TEXT,
        "InstitutionName": _TEXT,
        "ModalitiesInStudy": st.sampled_from(["", "US", "US\\SR", "\\US\\\\SR\\", "ECG\\SR\\US"]),
        "NumberOfStudyRelatedSeries": st.integers(0, 10_000),
        "NumberOfStudyRelatedInstances": st.integers(0, 10_000_000),
    }
)
# Return keys a peer may ask for: indexed ones, one we do not index, a sequence.
_RETURN_KEYS = [
    *(keyword for keyword in ATTRIBUTES if ATTRIBUTES[keyword].level.depth <= 1),
    "OtherPatientIDs",
    "ReferencedStudySequence",
    "RetrieveAETitle",
]


def _identifier(keywords: list[str], charset: str | None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in keywords:
        setattr(ds, keyword, [] if keyword.endswith("Sequence") else "")
    return ds


@given(
    row=_STUDY_ROW,
    keywords=st.lists(st.sampled_from(_RETURN_KEYS), unique=True),
    charset=st.sampled_from([None, "ISO_IR 192", "GB18030", "GBK", "ISO_IR 100"]),
    transfer_syntax=st.sampled_from(TRANSFER_SYNTAXES),
)
def test_encoded_response_is_byte_for_byte_response_dataset(
    row: dict[str, Any], keywords: list[str], charset: str | None, transfer_syntax: UID
) -> None:
    request = parse_identifier(_identifier(keywords, charset), STUDY_ROOT_FIND)
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian

    fast = dsutils.encode(encoded_response(request, row, "TELECONSULT", transfer_syntax), implicit, little)
    with warnings.catch_warnings():
        # pydicom checks values as they are assigned ("1980" is no valid DA) and
        # warns; both paths write them as stored, which is what this compares.
        warnings.simplefilter("ignore", UserWarning)
        reference = dsutils.encode(response_dataset(request, row, "TELECONSULT"), implicit, little)

    assert fast is not None
    assert fast == reference


def test_encoded_response_is_written_without_conversion() -> None:
    """The elements are raw and the original encoding is the writer's: pydicom copies the bytes."""
    request = parse_identifier(
        _identifier(["PatientName", "StudyInstanceUID"], "ISO_IR 192"), STUDY_ROOT_FIND
    )
    row = {"PatientName": "王^小明", "StudyInstanceUID": "2.25.1"}

    ds = encoded_response(request, row, "TELECONSULT", ExplicitVRLittleEndian)
    dsutils.encode(ds, False, True)

    # pydicom reads Specific Character Set itself to compare encodings; the rest stays raw
    converted = [tag for tag, element in ds._dict.items() if not element.is_raw]
    assert converted in ([], [0x00080005])


def test_a_value_outside_the_response_charset_falls_back_to_pydicom() -> None:
    """GBK cannot write every character: the response is still built, as pydicom writes it."""
    request = parse_identifier(_identifier(["PatientName", "StudyDescription"], "GBK"), STUDY_ROOT_FIND)
    row = {"PatientName": "Åsa^Ŝmith", "StudyDescription": "Ŝ 心脏超声", "StudyInstanceUID": "2.25.1"}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it replaces what GBK lacks
        fast = dsutils.encode(
            encoded_response(request, row, "TELECONSULT", ExplicitVRLittleEndian), False, True
        )
        reference = dsutils.encode(response_dataset(request, row, "TELECONSULT"), False, True)

    assert fast == reference


def test_large_match_answers_every_study_through_a_real_association(
    gateway: RunningGateway,
) -> None:
    """Many pending responses over pynetdicom in each accepted transfer syntax, read by the peer."""
    names = ["王小明", "Wang^XiaoMing=王^小明", "LI^HUA"]
    for number in range(30):
        ds = make_image(charset="ISO_IR 192", patient_name=names[number % 3], patient_id=f"P{number}")
        gateway.store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="TOWN01"
        )
    for transfer_syntax in UNCOMPRESSED_TRANSFER_SYNTAXES:  # what the gateway accepts for C-FIND
        ae = AE(ae_title="TOWNUS")
        ae.add_requested_context(STUDY_ROOT_FIND, [transfer_syntax])
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
        assert assoc.is_established
        try:
            identifier = _identifier(["PatientName", "PatientID", "ModalitiesInStudy"], "ISO_IR 192")
            responses = list(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
        finally:
            assoc.release()
        matches = [ds for status, ds in responses if status.Status == 0xFF00]
        assert responses[-1][0].Status == 0x0000
        assert sorted(str(ds.PatientID) for ds in matches) == sorted(f"P{n}" for n in range(30))
        assert {str(ds.PatientName) for ds in matches} == set(names)
        assert all(list(ds.ModalitiesInStudy) == ["US"] or ds.ModalitiesInStudy == "US" for ds in matches)
