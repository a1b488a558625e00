"""The store on SQLite and PostgreSQL: durability rules, idempotency, versions."""

from __future__ import annotations

import hashlib
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from teleconsult.domain.studies import StoreOutcome, StudyQuery
from teleconsult.errors import InvalidInstanceError, InvalidUIDError, SOPClassMismatchError
from teleconsult.events import EventType
from teleconsult.storage.store import InstanceStore
from tests.factories import CT_IMAGE, US_IMAGE, encode, make_image


def _put(store: InstanceStore, data: bytes, ts: str = ExplicitVRLittleEndian, **kwargs: object):  # type: ignore[no-untyped-def]
    return store.store_instance(data, ts, calling_ae_title="TOWNUS", source_organisation="TOWN01", **kwargs)


def _set_unchecked(ds: Dataset, keyword: str, value: str) -> None:
    """Put a value pydicom would refuse to write: what a broken device sends."""
    ds[keyword] = DataElement(keyword, "UI", value, validation_mode=pydicom_config.IGNORE)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


def test_stored_file_reads_back_identical_with_file_meta(store: InstanceStore, bus) -> None:  # type: ignore[no-untyped-def]
    ds = make_image()
    data = encode(ds)
    stored = _put(store, data)

    assert stored.outcome is StoreOutcome.STORED
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    part10 = store.read_instance(ds.SOPInstanceUID)
    assert part10.endswith(data), "the data set is stored byte for byte"
    back = dcmread(BytesIO(part10))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.PatientName == ds.PatientName
    assert store.files.data_set_sha256(store.index.instance(ds.SOPInstanceUID).file_key) == stored.sha256
    assert [e.type for e in bus.events] == [EventType.INSTANCE_STORED]
    assert bus.events[0].data["study_instance_uid"] == ds.StudyInstanceUID
    assert bus.events[0].data["source_organisation"] == "TOWN01"


def test_file_path_is_derived_from_content_not_from_uids(store: InstanceStore) -> None:
    ds = make_image()
    stored = _put(store, encode(ds))
    (path,) = _files(store.files.root)
    assert path.name == f"{stored.sha256}.dcm"
    assert ds.SOPInstanceUID not in str(path)
    assert not list((store.files.root / "tmp").iterdir()), "no temporary file is left behind"


def test_resend_of_same_content_is_idempotent(store: InstanceStore, bus) -> None:  # type: ignore[no-untyped-def]
    data = encode(make_image())
    first = _put(store, data)
    second = _put(store, data)
    assert second.outcome is StoreOutcome.DUPLICATE
    assert second.version == first.version == 1
    assert store.index.counts()["instances"] == 1
    assert len(_files(store.files.root)) == 1
    assert len(bus.events) == 1, "a duplicate emits no second event"


def test_resend_with_new_content_keeps_the_earlier_version(store: InstanceStore) -> None:
    ds = make_image()
    original = encode(ds)
    _put(store, original)
    ds.PatientName = "Wang^XiaoMing=王^晓明"  # a corrected name
    corrected = encode(ds)

    replaced = _put(store, corrected)

    assert replaced.outcome is StoreOutcome.REPLACED
    assert replaced.version == 2
    assert store.read_instance(ds.SOPInstanceUID).endswith(corrected)
    versions = store.index.versions(ds.SOPInstanceUID)
    assert [(v["version"], v["current"]) for v in versions] == [(1, False), (2, True)]
    assert store.files.read(versions[0]["file_key"]).endswith(original)
    assert store.index.counts()["instances"] == 1
    found = store.index.find_studies(StudyQuery(patient_name="*晓明"))
    assert [s.study_instance_uid for s in found] == [ds.StudyInstanceUID]


@pytest.mark.parametrize(
    ("charset", "name", "query"),
    [
        ("ISO_IR 192", "王^小明", "王*"),
        ("GB18030", "Wang^XiaoMing=王^小明", "王^小明"),
        ("GBK", "王^小明", "王^小*"),
        ("GB18030", "Wang^XiaoMing=王^小明", "wang*"),
    ],
)
def test_study_is_found_by_chinese_name(store: InstanceStore, charset: str, name: str, query: str) -> None:
    ds = make_image(charset=charset, patient_name=name)
    _put(store, encode(ds))
    _put(store, encode(make_image(charset="ISO_IR 192", patient_name="李^华", patient_id="P9")))

    found = store.index.find_studies(StudyQuery(patient_name=query))

    assert [s.study_instance_uid for s in found] == [ds.StudyInstanceUID]
    assert found[0].patient_name == name


def test_study_level_attributes_and_counts(store: InstanceStore) -> None:
    study = generate_uid()
    us_series, ct_series = generate_uid(), generate_uid()
    for _ in range(3):
        _put(store, encode(make_image(study_instance_uid=study, series_instance_uid=us_series)))
    _put(
        store,
        encode(
            make_image(CT_IMAGE, study_instance_uid=study, series_instance_uid=ct_series, modality="CT"),
            ImplicitVRLittleEndian,
        ),
        ImplicitVRLittleEndian,
    )

    (record,) = store.index.find_studies(StudyQuery(study_instance_uids=(study,)))

    assert record.modalities_in_study == ("CT", "US")
    assert record.number_of_series == 2
    assert record.number_of_instances == 4
    assert record.accession_number == "A0001"
    assert record.source_organisation == "TOWN01"
    assert record.issuer_of_patient_id == "TOWN01"
    assert store.index.find_studies(StudyQuery(modality="CT"))[0].study_instance_uid == study
    assert store.index.find_studies(StudyQuery(study_date="20261101-20261130"))
    assert not store.index.find_studies(StudyQuery(study_date="-20261122"))
    assert not store.index.find_studies(StudyQuery(modality="MR"))


def test_same_patient_id_from_two_organisations_is_two_patients(store: InstanceStore) -> None:
    store.store_instance(
        encode(make_image(patient_id="0001", patient_name="张^三")),
        ExplicitVRLittleEndian,
        calling_ae_title="A",
        source_organisation="TOWN01",
    )
    store.store_instance(
        encode(make_image(patient_id="0001", patient_name="李^四")),
        ExplicitVRLittleEndian,
        calling_ae_title="B",
        source_organisation="TOWN02",
    )
    assert store.index.counts()["patients"] == 2
    names = {s.patient_name for s in store.index.find_studies(StudyQuery(patient_id="0001"))}
    assert names == {"张^三", "李^四"}


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda ds: _set_unchecked(ds, "SOPInstanceUID", "1.2.3/../../etc"), InvalidUIDError),
        (lambda ds: _set_unchecked(ds, "SOPInstanceUID", "1.2.abc"), InvalidUIDError),
        (lambda ds: _set_unchecked(ds, "StudyInstanceUID", "1.2.03"), InvalidUIDError),
        (lambda ds: delattr(ds, "SeriesInstanceUID"), InvalidUIDError),
        (lambda ds: setattr(ds, "SOPClassUID", CT_IMAGE), SOPClassMismatchError),
    ],
)
def test_bad_instances_are_refused_and_nothing_is_written(store: InstanceStore, mutate, error) -> None:  # type: ignore[no-untyped-def]
    ds = make_image()
    mutate(ds)
    data = encode(ds)
    with pytest.raises(error):
        _put(store, data, expected_sop_class_uid=US_IMAGE)
    assert store.index.counts()["instances"] == 0
    assert _files(store.files.root) == []


def test_truncated_data_set_is_refused(store: InstanceStore) -> None:
    data = encode(make_image())
    # cut inside the Patient Name value: the header cannot be read
    cut = data.index(b"PN") + 10
    with pytest.raises(InvalidInstanceError):
        _put(store, data[:cut])
    assert store.index.counts()["instances"] == 0


def test_encoding_that_contradicts_the_transfer_syntax_is_refused(store: InstanceStore) -> None:
    with pytest.raises(InvalidInstanceError, match="does not match the negotiated"):
        _put(store, encode(make_image(), ExplicitVRLittleEndian), ImplicitVRLittleEndian)
    assert store.index.counts()["instances"] == 0


def test_command_and_data_set_instance_uid_must_agree(store: InstanceStore) -> None:
    ds = make_image()
    with pytest.raises(InvalidInstanceError, match="differs"):
        _put(store, encode(ds), expected_sop_instance_uid=generate_uid())


def test_unfinished_temporary_files_are_swept_on_open(app_settings, bus) -> None:  # type: ignore[no-untyped-def]
    tmp = Path(app_settings.data_dir) / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "crashed.part").write_bytes(b"half a file")
    store = InstanceStore(app_settings, bus)
    try:
        assert store.files.open() == 1
        assert not (tmp / "crashed.part").exists()
    finally:
        store.close()


def test_concurrent_writers_of_one_study_all_land(store: InstanceStore) -> None:
    study, series = generate_uid(), generate_uid()
    payloads = [
        encode(make_image(study_instance_uid=study, series_instance_uid=series, seed=i)) for i in range(40)
    ]
    duplicate = payloads[0]
    errors: list[BaseException] = []

    def send(chunk: list[bytes]) -> None:
        try:
            for data in chunk:
                _put(store, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=([duplicate, *payloads[i::4]],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    counts = store.index.counts()
    assert counts == {"patients": 1, "studies": 1, "series": 1, "instances": 40}


def test_locate_finds_a_study_series_or_instance_only_under_its_own_path(store: InstanceStore) -> None:
    """WADO-RS paths: a UID under another study or series finds nothing, whatever exists elsewhere."""
    study, other_study = generate_uid(), generate_uid()
    series_a, series_b = generate_uid(), generate_uid()
    stored = {}
    for series, number in ((series_a, 2), (series_b, 1), (series_a, 1)):
        ds = make_image(study_instance_uid=study, series_instance_uid=series, patient_id="P-LOC")
        ds.InstanceNumber = number
        _put(store, encode(ds))
        stored.setdefault(series, []).append(str(ds.SOPInstanceUID))
    elsewhere = make_image(study_instance_uid=other_study, patient_id="P-ELSE")
    store.store_instance(
        encode(elsewhere), ExplicitVRLittleEndian, calling_ae_title="TOWN2US", source_organisation="TOWN02"
    )

    rows = store.index.locate(study)
    assert len(rows) == 3
    assert [row.study_instance_uid for row in rows] == [study] * 3
    assert {row.patient_id for row in rows} == {"P-LOC"}
    assert {row.source_organisation for row in rows} == {"TOWN01"}
    assert rows[-1].sop_instance_uid == stored[series_a][0]  # instance number 2 comes last
    record = store.index.instance(rows[0].sop_instance_uid)
    assert record is not None
    assert (rows[0].file_key, rows[0].size, rows[0].transfer_syntax_uid) == (
        record.file_key,
        record.size,
        record.transfer_syntax_uid,
    )

    assert sorted(row.sop_instance_uid for row in store.index.locate(study, series_a)) == sorted(
        stored[series_a]
    )
    (one,) = store.index.locate(study, series_b, stored[series_b][0])
    assert one.sop_class_uid == US_IMAGE
    # the right UIDs under the wrong parent
    assert store.index.locate(study, series_b, stored[series_a][0]) == []
    assert store.index.locate(other_study, series_a) == []
    assert store.index.locate(str(elsewhere.StudyInstanceUID), series_a, stored[series_a][0]) == []
    assert store.index.locate(generate_uid()) == []
