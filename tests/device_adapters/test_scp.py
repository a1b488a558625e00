"""SCP-ECG: every supported encoding read back exactly, text in its declared character set, damage refused."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.formats import detect_format
from device_adapters.ecg.record import EcgFormat
from device_adapters.ecg.scp import read_scp_ecg
from tests.device_adapters.scp_writer import (
    LANGUAGE_ASCII,
    LANGUAGE_GB2312,
    LANGUAGE_ISO10646,
    LANGUAGE_LATIN1,
    ScpSpec,
    crc,
    write_scp,
)


def _samples(record: object) -> dict[str, np.ndarray]:
    return {lead.name: lead.samples for lead in record.rhythm.leads}  # type: ignore[attr-defined]


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("huffman", [False, True], ids=["uncompressed", "default-huffman"])
def test_every_supported_encoding_reads_back_the_samples(
    leads: dict[str, np.ndarray], order: int, huffman: bool
) -> None:
    data = write_scp(ScpSpec(leads=leads, difference_order=order, use_huffman=huffman))
    assert detect_format("cart.scp", data) is EcgFormat.SCP_ECG
    record = read_scp_ecg(data)
    got = _samples(record)
    assert list(got) == list(leads)
    for name, values in leads.items():
        np.testing.assert_array_equal(got[name], values)
    rhythm = record.rhythm
    assert rhythm.sampling_frequency == 500
    assert {lead.sensitivity_uv for lead in rhythm.leads} == {5.0}
    assert (rhythm.filters.low_hz, rhythm.filters.high_hz, rhythm.filters.notch_hz) == (0.05, 150.0, 50.0)
    assert record.acquired_at is not None
    assert record.acquired_at.isoformat() == "2026-11-24T09:30:15+08:00"
    assert record.device.manufacturer == "ACME"
    assert record.device.serial_number == "SN42"
    assert record.device.institution == "一号乡镇卫生院"


@pytest.mark.parametrize("huffman", [False, True])
def test_an_independent_reader_agrees_with_the_test_writer(
    leads: dict[str, np.ndarray], huffman: bool, tmp_path: Path
) -> None:
    """ecgdatakit (another SCP-ECG implementation) reads the writer's files to the same samples and CRCs."""
    from ecgdatakit.parsing.parsers.scp_ecg import SCPECGParser

    path = tmp_path / "cart.scp"
    path.write_bytes(write_scp(ScpSpec(leads=leads, difference_order=2, use_huffman=huffman)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CRC it disagrees with would warn
        other = SCPECGParser().parse(path)
    assert other.raw_metadata["checksum_valid"] is True
    assert [lead.label for lead in other.leads] == list(leads)
    for lead in other.leads:
        np.testing.assert_array_equal(np.asarray(lead.samples, dtype=np.int64), leads[lead.label])
        assert lead.sampling_rate == 500
    assert (other.patient.last_name, other.patient.first_name, other.patient.patient_id) == (
        "王",
        "小明",
        "P0001",
    )


@pytest.mark.parametrize(
    ("language_code", "encoding"),
    [
        (LANGUAGE_GB2312, "gb18030"),  # declared GB 2312, characters only GB18030 has
        (LANGUAGE_ISO10646, "utf-8"),
        (LANGUAGE_ASCII, "gb18030"),  # carts that leave the code at ASCII
        (LANGUAGE_ASCII, "utf-8"),
        (None, "gb18030"),  # no tag 14 at all
    ],
)
def test_chinese_names_in_the_declared_or_usual_character_sets(
    leads: dict[str, np.ndarray], language_code: int | None, encoding: str
) -> None:
    spec = ScpSpec(
        leads=leads,
        family_name="欧阳",
        given_name="喆堃",
        language_code=language_code,
        text_encoding=encoding,
    )
    patient = read_scp_ecg(write_scp(spec)).patient
    assert (patient.family_name, patient.given_name, patient.patient_id) == ("欧阳", "喆堃", "P0001")
    assert patient.birth_date is not None
    assert patient.birth_date.isoformat() == "1962-03-04"
    assert patient.sex == "M"


def test_latin1_and_the_override_setting(leads: dict[str, np.ndarray]) -> None:
    latin = ScpSpec(
        leads=leads,
        family_name="Müller",
        given_name="Zoë",
        language_code=LANGUAGE_LATIN1,
        text_encoding="latin-1",
    )
    assert read_scp_ecg(write_scp(latin)).patient.family_name == "Müller"
    # A cart that declares Latin-1 but writes GB18030: only the override reads it right.
    lying = ScpSpec(leads=leads, language_code=LANGUAGE_LATIN1, text_encoding="gb18030")
    assert read_scp_ecg(write_scp(lying)).patient.family_name != "王"
    assert read_scp_ecg(write_scp(lying), text_encoding="gb18030").patient.family_name == "王"


def test_undeclared_text_that_is_no_known_character_set_is_refused(leads: dict[str, np.ndarray]) -> None:
    spec = ScpSpec(leads=leads, language_code=LANGUAGE_ASCII, extra_tags=[(20, b"\x81\x20\xff\x00")])
    with pytest.raises(EcgImportError, match="tag 20 is not valid ASCII, UTF-8 or GB18030"):
        read_scp_ecg(write_scp(spec))


def test_undefined_language_code_is_refused(leads: dict[str, np.ndarray]) -> None:
    with pytest.raises(UnsupportedEcgError, match="language support code 0x3F"):
        read_scp_ecg(write_scp(ScpSpec(leads=leads, language_code=0x3F)))


def test_truncated_file_is_refused_with_the_sizes(leads: dict[str, np.ndarray]) -> None:
    data = write_scp(ScpSpec(leads=leads))
    with pytest.raises(
        EcgImportError, match=rf"says it has {len(data)} bytes but the file has 5000: .*truncated"
    ):
        read_scp_ecg(data[:5000])


def test_record_crc_mismatch_is_refused(leads: dict[str, np.ndarray]) -> None:
    data = bytearray(write_scp(ScpSpec(leads=leads)))
    data[-3] ^= 0x01  # a flipped bit in the rhythm data
    with pytest.raises(EcgImportError, match=r"record CRC is 0x.* the file is damaged"):
        read_scp_ecg(bytes(data))


def test_section_crc_mismatch_is_refused_even_with_a_good_record_crc(leads: dict[str, np.ndarray]) -> None:
    data = bytearray(write_scp(ScpSpec(leads=leads)))
    data[-3] ^= 0x01
    struct.pack_into("<H", data, 0, crc(bytes(data[2:])))  # the record CRC made to match again
    with pytest.raises(EcgImportError, match="Section 6 CRC"):
        read_scp_ecg(bytes(data))


@pytest.mark.parametrize(
    ("spec_changes", "message"),
    [
        ({"use_huffman": True, "huffman_tables": 2}, "custom Huffman table"),
        ({"bimodal": 1}, "bimodal compression"),
        ({"lead_flags": 0x05}, "reference beat subtraction"),
        ({"difference_order": 3}, "difference encoding 3"),
    ],
)
def test_unsupported_features_are_refused_by_name(
    leads: dict[str, np.ndarray], spec_changes: dict[str, object], message: str
) -> None:
    spec = ScpSpec(leads=leads, **spec_changes)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedEcgError, match=message):
        read_scp_ecg(write_scp(spec))


def test_a_record_without_patient_id_is_refused(leads: dict[str, np.ndarray]) -> None:
    with pytest.raises(EcgImportError, match="no patient ID"):
        read_scp_ecg(write_scp(ScpSpec(leads=leads, omit_tags={2})))


def test_sixteen_bit_escape_codes_in_huffman_data() -> None:
    values = np.array([0, 5, -8, 9, -100, 127, -128, 300, -20000, 32767, -32768, 0], dtype=np.int64)
    leads = {"I": values, "II": values[::-1].copy()}
    record = read_scp_ecg(write_scp(ScpSpec(leads=leads, use_huffman=True)))
    np.testing.assert_array_equal(_samples(record)["I"], leads["I"])
    np.testing.assert_array_equal(_samples(record)["II"], leads["II"])
