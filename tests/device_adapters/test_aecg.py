"""HL7 aECG: rhythm and median beats with scale and origin, any declared character set, bad XML refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from device_adapters.ecg.aecg import read_hl7_aecg
from device_adapters.ecg.errors import EcgImportError, UnknownEcgFormatError, UnsupportedEcgError
from tests.device_adapters.writers import write_aecg


@pytest.mark.parametrize("unit", ["uV", "mV"])
def test_rhythm_and_median_beats_with_scale_and_origin(leads: dict[str, np.ndarray], unit: str) -> None:
    median = {name: values[:600] for name, values in leads.items()}
    record = read_hl7_aecg(write_aecg(leads, median=median, scale_uv=2.5, origin_uv=-10.0, scale_unit=unit))
    assert [group.label for group in record.groups] == ["RHYTHM", "MEDIAN BEAT"]
    assert [group.derived for group in record.groups] == [False, True]
    rhythm = record.rhythm
    assert rhythm.sampling_frequency == pytest.approx(500)
    for lead in rhythm.leads:
        np.testing.assert_array_equal(lead.samples, leads[lead.name])
        assert lead.sensitivity_uv == pytest.approx(2.5)
        assert lead.baseline_uv == pytest.approx(-10.0)
        np.testing.assert_allclose(lead.microvolts(), leads[lead.name] * 2.5 - 10.0)
    assert record.groups[1].samples_per_lead == 600
    assert (rhythm.filters.low_hz, rhythm.filters.high_hz, rhythm.filters.notch_hz) == (0.05, 150, 50)
    patient = record.patient
    assert (patient.patient_id, patient.family_name, patient.given_name, patient.sex) == (
        "A0001",
        "李",
        "华",
        "F",
    )
    assert patient.birth_date is not None
    assert patient.birth_date.isoformat() == "1975-06-07"
    assert record.acquired_at is not None
    assert record.acquired_at.isoformat() == "2026-11-24T09:30:15"
    assert (record.device.manufacturer, record.device.model, record.device.serial_number) == (
        "Synthetic Devices",
        "CardioX 12",
        "DEV-7",
    )


@pytest.mark.parametrize("encoding", ["UTF-8", "GB18030", "GBK"])
def test_chinese_names_in_the_declared_character_set(leads: dict[str, np.ndarray], encoding: str) -> None:
    record = read_hl7_aecg(write_aecg(leads, family="欧阳", given="喆", encoding=encoding))
    assert (record.patient.family_name, record.patient.given_name) == ("欧阳", "喆")


def test_an_independent_reader_agrees_with_the_test_writer(
    leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from ecgdatakit.parsing.parsers.hl7_aecg import HL7aECGParser

    path = tmp_path / "ecg.xml"
    path.write_bytes(write_aecg(leads, scale_uv=5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = HL7aECGParser().parse(path)
    assert {lead.label for lead in other.leads} == set(leads)
    for lead in other.leads:
        np.testing.assert_allclose(np.asarray(lead.samples) * lead.resolution, leads[lead.label] * 5.0)


@pytest.mark.parametrize(
    ("document", "error", "message"),
    [
        (
            b'<?xml version="1.0"?><AnnotatedECG xmlns="urn:hl7-org:v3"><component>',
            EcgImportError,
            "malformed XML",
        ),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", EcgImportError, "DTD or entity"),
        (
            b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>',
            UnknownEcgFormatError,
            "not an HL7 aECG",
        ),
        (b'<AnnotatedECG xmlns="urn:hl7-org:v3"/>', UnsupportedEcgError, "no rhythm series"),
    ],
)
def test_bad_documents_are_refused_by_name(document: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_hl7_aecg(document)


def test_digits_that_are_not_integers_are_refused(leads: dict[str, np.ndarray]) -> None:
    document = write_aecg({"I": leads["I"][:10]}).replace(b"<digits>", b"<digits>1.5 ")
    with pytest.raises(EcgImportError, match="digits of lead I are not all integers"):
        read_hl7_aecg(document)
