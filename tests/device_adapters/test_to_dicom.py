"""Every format to DICOM: dciodvfy finds no error, the store files it, the name and the samples survive."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from device_adapters.ecg.errors import UnsupportedEcgError
from device_adapters.ecg.importer import EcgImporter
from device_adapters.ecg.record import EcgFormat, EcgRecord, Lead, Patient, WaveformGroup
from device_adapters.ecg.to_dicom import (
    GENERAL_ECG_WAVEFORM_STORAGE,
    TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
    build_ecg_waveform,
)
from teleconsult.domain.studies import StoredInstance, StoreOutcome, StudyQuery
from teleconsult.events import EventType
from teleconsult.storage.store import InstanceStore
from tests.conftest import RecordingBus
from tests.device_adapters.conftest import errors_of, run_dciodvfy, stored_dataset
from tests.device_adapters.scp_writer import (
    LANGUAGE_ASCII,
    LANGUAGE_GB2312,
    LANGUAGE_ISO10646,
    ScpSpec,
    write_scp,
)
from tests.device_adapters.writers import STANDARD_12, synthetic_leads, write_aecg, write_csv, write_wfdb

Files = dict[str, bytes]


def _scp(leads: dict[str, np.ndarray], language_code: int, encoding: str) -> Files:
    spec = ScpSpec(
        leads=leads, family_name="王", given_name="小明", language_code=language_code, text_encoding=encoding
    )
    return {"cart.scp": write_scp(spec)}


def _wfdb(leads: dict[str, np.ndarray], folder: Path, encoding: str) -> Files:
    comments = ("patient_id: P0001", "patient_name: 王^小明", "sex: M")
    write_wfdb(folder, leads, comments=comments, comment_encoding=encoding)
    return {path.name: path.read_bytes() for path in folder.iterdir()}


SOURCES: dict[str, Callable[[dict[str, np.ndarray], Path], Files]] = {
    "scp-gb2312": lambda leads, _: _scp(leads, LANGUAGE_GB2312, "gb18030"),
    "scp-ascii-gb18030": lambda leads, _: _scp(leads, LANGUAGE_ASCII, "gb18030"),
    "scp-iso10646-utf8": lambda leads, _: _scp(leads, LANGUAGE_ISO10646, "utf-8"),
    "scp-huffman": lambda leads, _: {
        "cart.scp": write_scp(ScpSpec(leads=leads, difference_order=2, use_huffman=True))
    },
    "aecg-utf8": lambda leads, _: {
        "ecg.xml": write_aecg(
            leads,
            family="王",
            given="小明",
            patient_id="P0001",
            median={k: v[:600] for k, v in leads.items()},
        )
    },
    "aecg-gb18030": lambda leads, _: {
        "ecg.xml": write_aecg(leads, family="王", given="小明", patient_id="P0001", encoding="GB18030")
    },
    "csv-utf8": lambda leads, _: {"ecg.csv": write_csv(leads, patient_name="王^小明", patient_id="P0001")},
    "csv-gb18030-mv": lambda leads, _: {
        "ecg.csv": write_csv(
            leads, patient_name="王^小明", patient_id="P0001", units="mV", encoding="gb18030"
        )
    },
    "wfdb-utf8": lambda leads, folder: _wfdb(leads, folder, "utf-8"),
    "wfdb-gb18030": lambda leads, folder: _wfdb(leads, folder, "gb18030"),
}
SCALE_UV = {"wfdb": 1000 / 200}  # wfdb: gain 200/mV; every other writer: 5 uV per count


def _expected_uv(source: str, leads: dict[str, np.ndarray]) -> np.ndarray:
    scale = SCALE_UV.get(source.split("-")[0], 5.0)
    return np.stack([leads[name] * scale for name in STANDARD_12], axis=1)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_format_to_dicom_to_store_round_trip(
    source: str,
    leads: dict[str, np.ndarray],
    importer: EcgImporter,
    store: InstanceStore,
    bus: RecordingBus,
    tmp_path: Path,
) -> None:
    files = SOURCES[source](leads, tmp_path / "wfdb")
    imported = importer.import_files(files, organisation="TOWN01")
    stored = imported.stored
    assert stored.outcome is StoreOutcome.STORED
    assert stored.sop_class_uid == TWELVE_LEAD_ECG_WAVEFORM_STORAGE
    ds = stored_dataset(store, stored.sop_instance_uid)

    # valid: no dciodvfy error
    lines = run_dciodvfy(ds, tmp_path)
    assert errors_of(lines) == [], "\n".join(lines)

    # filed: found by Patient ID, the Chinese name intact, announced
    (study,) = store.index.find_studies(StudyQuery(patient_id="P0001"))
    assert study.study_instance_uid == stored.study_instance_uid
    assert study.patient_name.startswith("王^小明")
    assert study.source_organisation == "TOWN01"
    assert study.modalities_in_study == ("ECG",)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "王^小明"
    assert any(
        event.type is EventType.INSTANCE_STORED and event.data["sop_instance_uid"] == stored.sop_instance_uid
        for event in bus.events
    )

    # the samples: equal to the source's, within the scaling
    rhythm = ds.WaveformSequence[0]
    assert [c.ChannelSourceSequence[0].CodeValue for c in rhythm.ChannelDefinitionSequence] == [
        "5.6.3-9-1", "5.6.3-9-2", "5.6.3-9-61", "5.6.3-9-62", "5.6.3-9-63", "5.6.3-9-64",
        "5.6.3-9-3", "5.6.3-9-4", "5.6.3-9-5", "5.6.3-9-6", "5.6.3-9-7", "5.6.3-9-8",
    ]  # fmt: skip
    sensitivity = min(float(c.ChannelSensitivity) for c in rhythm.ChannelDefinitionSequence)
    np.testing.assert_allclose(ds.waveform_array(0), _expected_uv(source, leads), atol=sensitivity / 2 + 1e-6)
    assert float(rhythm.SamplingFrequency) == 500
    assert rhythm.WaveformBitsAllocated == 16


def test_waveform_module_details(
    leads: dict[str, np.ndarray], importer: EcgImporter, store: InstanceStore
) -> None:
    stored = importer.import_files(
        {"cart.scp": write_scp(ScpSpec(leads=leads))}, organisation="TOWN01"
    ).stored
    ds = stored_dataset(store, stored.sop_instance_uid)
    group = ds.WaveformSequence[0]
    assert (group.WaveformSampleInterpretation, group.WaveformOriginality, group.MultiplexGroupLabel) == (
        "SS", "ORIGINAL", "RHYTHM",
    )  # fmt: skip
    channel = group.ChannelDefinitionSequence[0]
    source = channel.ChannelSourceSequence[0]
    assert (source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning) == (
        "5.6.3-9-1", "SCPECG", "Lead I (Einthoven)",
    )  # fmt: skip
    units = channel.ChannelSensitivityUnitsSequence[0]
    assert (units.CodeValue, units.CodingSchemeDesignator) == ("uV", "UCUM")
    assert float(channel.ChannelSensitivity) == 5.0
    assert float(channel.ChannelSensitivityCorrectionFactor) == 1
    assert float(channel.ChannelBaseline) == 0
    assert float(channel.ChannelTimeSkew) == 0
    assert (float(channel.FilterLowFrequency), float(channel.FilterHighFrequency)) == (0.05, 150)
    assert float(channel.NotchFilterFrequency) == 50
    assert ds.AcquisitionDateTime == "20261124093015"
    assert ds.TimezoneOffsetFromUTC == "+0800"
    assert ds.Manufacturer == "ACME"
    assert ds.DeviceSerialNumber == "SN42"
    assert ds.PatientBirthDate == "19620304"
    assert ds.PatientSex == "M"


def test_the_same_file_twice_is_one_instance(leads: dict[str, np.ndarray], importer: EcgImporter) -> None:
    files = {"cart.scp": write_scp(ScpSpec(leads=leads))}
    first = importer.import_files(files, organisation="TOWN01").stored
    again = importer.import_files(files, organisation="TOWN01").stored
    assert again.sop_instance_uid == first.sop_instance_uid
    assert again.outcome is StoreOutcome.DUPLICATE


def test_uids_under_the_configured_root(
    leads: dict[str, np.ndarray], store: InstanceStore, app_settings: object
) -> None:
    settings = app_settings.model_copy(update={"uid_root": "1.2.826.0.1.3680043.10.999"})  # type: ignore[attr-defined]
    stored: StoredInstance = (
        EcgImporter(settings, store).import_files({"ecg.csv": write_csv(leads)}, organisation="TOWN02").stored
    )
    for uid in (stored.sop_instance_uid, stored.study_instance_uid, stored.series_instance_uid):
        assert uid.startswith("1.2.826.0.1.3680043.10.999.")
        assert len(uid) <= 64


def _record(names: tuple[str, ...], *, rate: float = 500, seconds: float = 10) -> EcgRecord:
    signals = synthetic_leads(names, rate=int(rate), seconds=seconds)
    leads = tuple(Lead(name, values, 2.5) for name, values in signals.items())
    return EcgRecord(EcgFormat.CSV, Patient("G1", "Test"), (WaveformGroup("RHYTHM", rate, leads),))


def _build(record: EcgRecord) -> Dataset:
    return build_ecg_waveform(
        record,
        source_sha256="0" * 64,
        organisation="TOWN01",
        uid_root=None,
        imported_at=datetime(2026, 1, 2, 3, 4, 5),
    )


@pytest.mark.parametrize(
    ("names", "rate", "seconds", "sop_class"),
    [
        (STANDARD_12, 500, 10, TWELVE_LEAD_ECG_WAVEFORM_STORAGE),
        (STANDARD_12, 1000, 16, TWELVE_LEAD_ECG_WAVEFORM_STORAGE),
        (STANDARD_12, 500, 20, GENERAL_ECG_WAVEFORM_STORAGE),  # longer than 16 s
        (STANDARD_12[:8], 500, 10, GENERAL_ECG_WAVEFORM_STORAGE),  # not the twelve leads
        ((*STANDARD_12, "V4R", "MLII"), 250, 30, GENERAL_ECG_WAVEFORM_STORAGE),  # extra and unknown leads
    ],
)
def test_sop_class_by_leads_rate_and_duration(
    names: tuple[str, ...], rate: int, seconds: float, sop_class: str, tmp_path: Path
) -> None:
    ds = _build(_record(names, rate=rate, seconds=seconds))
    assert ds.SOPClassUID == sop_class
    lines = run_dciodvfy(ds, tmp_path)
    assert errors_of(lines) == [], "\n".join(lines)
    labels = [c.ChannelLabel for c in ds.WaveformSequence[0].ChannelDefinitionSequence]
    if "MLII" in labels:
        channel = ds.WaveformSequence[0].ChannelDefinitionSequence[labels.index("MLII")]
        assert channel.ChannelSourceSequence[0].CodeMeaning == "Unspecified lead"


@pytest.mark.parametrize(
    ("names", "rate", "message"),
    [
        (STANDARD_12, 100, "sampling rate of 100 Hz"),
        (STANDARD_12, 2000, "2000 Hz"),
        (tuple(f"L{i}" for i in range(25)), 500, "25 leads"),
    ],
)
def test_ecgs_no_waveform_iod_takes_are_refused(names: tuple[str, ...], rate: int, message: str) -> None:
    with pytest.raises(UnsupportedEcgError, match=message):
        _build(_record(names, rate=rate, seconds=2))


def test_samples_beyond_16_bits_are_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([0, 40000, -70000, 123457, -5], dtype=np.int64)
    record = EcgRecord(
        EcgFormat.CSV, Patient("G1"), (WaveformGroup("RHYTHM", 500, (Lead("I", values, 0.5, 7.0),)),)
    )
    ds = _build(record)
    channel = ds.WaveformSequence[0].ChannelDefinitionSequence[0]
    assert float(channel.ChannelSensitivity) == 0.5 * 4  # 123457 / 4 fits in 16 bits
    np.testing.assert_allclose(ds.waveform_array(0)[:, 0], values * 0.5 + 7.0, atol=1.0)
