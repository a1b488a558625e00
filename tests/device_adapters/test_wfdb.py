"""WFDB: records written by wfdb itself, patient details from header comments, unsafe headers refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.formats import read_ecg
from device_adapters.ecg.wfdb_record import read_wfdb
from tests.device_adapters.writers import write_wfdb


@pytest.mark.parametrize("comment_encoding", ["utf-8", "gb18030"])
def test_a_record_with_gain_baseline_and_chinese_comments(
    leads: dict[str, np.ndarray], tmp_path: Path, comment_encoding: str
) -> None:
    header = write_wfdb(tmp_path, leads, gain=400.0, baseline=12, comment_encoding=comment_encoding)
    record = read_wfdb(header)
    assert [lead.name for lead in record.rhythm.leads] == list(leads)
    for lead in record.rhythm.leads:
        np.testing.assert_array_equal(lead.samples, leads[lead.name])
        np.testing.assert_allclose(lead.microvolts(), (leads[lead.name] - 12) * 1000 / 400)
    patient = record.patient
    assert (patient.patient_id, patient.family_name, patient.given_name, patient.sex) == (
        "W0001",
        "陈",
        "静",
        "F",
    )


def test_files_given_by_content_as_an_upload_sends_them(leads: dict[str, np.ndarray], tmp_path: Path) -> None:
    write_wfdb(tmp_path, leads)
    files = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(files) == {"rec01.hea", "rec01.dat"}
    assert read_ecg(files).patient.patient_id == "W0001"
    with pytest.raises(EcgImportError, match=r"'rec01\.dat', which was not sent with it"):
        read_ecg({"rec01.hea": files["rec01.hea"]})
    with pytest.raises(EcgImportError, match=r"exactly one \.hea"):
        read_ecg({"rec01.dat": files["rec01.dat"], "other.dat": b"x"})


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/rec.dat", ".hidden"])
def test_signal_files_outside_the_header_folder_are_never_opened(name: str) -> None:
    header = f"rec 1 500 10\n{name} 16 200/mV 16 0 0 0 0 I\n# patient_id: X\n".encode()
    with pytest.raises(EcgImportError, match="only plain file names"):
        read_ecg({"rec.hea": header, "rec.dat": b"\x00" * 20})


def test_multi_segment_and_missing_samples_are_refused(leads: dict[str, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedEcgError, match="multi-segment"):
        read_ecg({"rec.hea": b"rec/2 1 500 10\nseg1 5\nseg2 5\n"})
    gappy = {name: values.copy() for name, values in list(leads.items())[:2]}
    gappy["I"][10] = -32768  # format 16's "no sample" value
    with pytest.raises(UnsupportedEcgError, match="missing samples"):
        read_wfdb(write_wfdb(tmp_path, gappy))
