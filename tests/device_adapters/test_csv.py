"""CSV: the documented layout, µV or mV, UTF-8 or GB18030; ragged or incomplete files refused by line."""

from __future__ import annotations

import numpy as np
import pytest

from device_adapters.ecg.csv_table import read_csv
from device_adapters.ecg.errors import EcgImportError
from tests.device_adapters.writers import write_csv


@pytest.mark.parametrize(("units", "encoding"), [("uV", "utf-8"), ("mV", "gb18030"), ("mV", "utf-8-sig")])
def test_layout_units_and_encodings(leads: dict[str, np.ndarray], units: str, encoding: str) -> None:
    record = read_csv(write_csv(leads, units=units, encoding=encoding, time_column=units == "mV"))
    assert [lead.name for lead in record.rhythm.leads] == list(leads)
    for lead in record.rhythm.leads:
        np.testing.assert_allclose(lead.microvolts(), leads[lead.name] * 5.0, atol=1e-6)
    assert record.rhythm.sampling_frequency == 500
    patient = record.patient
    assert (patient.patient_id, patient.family_name, patient.given_name, patient.sex) == (
        "C0001",
        "张",
        "伟",
        "M",
    )
    assert record.acquired_at is not None
    assert record.acquired_at.isoformat() == "2026-11-24T10:00:00+08:00"


def test_values_without_a_decimal_step_are_kept_to_a_tenth_of_a_microvolt() -> None:
    values = np.array([0.123456, -1.5, 2.71828, 1000.0])
    record = read_csv(
        b"# patient_id: X\n# sampling_rate: 250\n# units: uV\nI\n" + "\n".join(map(str, values)).encode()
    )
    np.testing.assert_allclose(record.rhythm.leads[0].microvolts(), values, atol=0.05)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "# patient_id: X\n# sampling_rate: 500\n# units: uV\nI,II\n1,2\n3\n",
            r"line 6 has 1 values .* \(ragged",
        ),
        (
            "# patient_id: X\n# sampling_rate: 500\n# units: uV\nI,II\n1,2\n3,abc\n",
            "line 6: 'abc' is not a number",
        ),
        ("# patient_id: X\n# sampling_rate: 500\nI\n1\n", "no '# units: uV'"),
        ("# patient_id: X\n# sampling_rate: 500\n# units: volts\nI\n1\n", "must say uV or mV"),
        ("# patient_id: X\n# units: uV\nI\n1\n", "no '# sampling_rate"),
        ("# patient_id: X\n# sampling_rate: 500\n# units: uV\nI\n", "no samples"),
        ("# sampling_rate: 500\n# units: uV\nI\n1\n", "no patient ID"),
        ("# patient_id: X\n# sampling_rate: 500\n# units: uV\nI,I\n1,2\n", "lead 'I' appears twice"),
        ("# patient_id: X\n# sampling_rate: 500\n# units: uV\nI\nnan\n", "missing or non-numeric"),
    ],
)
def test_bad_files_are_refused_with_the_place(text: str, message: str) -> None:
    with pytest.raises(EcgImportError, match=message):
        read_csv(text.encode())


def test_text_in_neither_utf8_nor_gb18030_is_refused() -> None:
    with pytest.raises(EcgImportError, match="neither UTF-8 nor GB18030"):
        read_csv(b"# patient_id: \x80\xff\x80\nI\n1\n")
