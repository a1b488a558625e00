"""Reading index attributes from encoded data sets in every character set we meet."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from teleconsult.domain.instances import read_instance_attributes
from teleconsult.errors import InvalidInstanceError
from tests.factories import encode, make_ecg, make_image

# Common Chinese characters, plus Latin letters for the alphabetic group.
hanzi = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=1, max_size=4)
latin = st.text(alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=10)


@given(family=hanzi, given_name=hanzi, charset=st.sampled_from(["ISO_IR 192", "GB18030", "GBK"]))
def test_chinese_names_round_trip_in_every_character_set(family: str, given_name: str, charset: str) -> None:
    name = f"{family}^{given_name}"
    ds = make_image(charset=charset, patient_name=name)
    attrs = read_instance_attributes(encode(ds), ExplicitVRLittleEndian)
    assert attrs.patient_name == name
    assert attrs.patient_name_alphabetic == name


@given(family=latin, family_hanzi=hanzi, given_hanzi=hanzi)
def test_three_group_names_split_into_their_groups(family: str, family_hanzi: str, given_hanzi: str) -> None:
    ds = make_image(charset="GB18030", patient_name=f"{family}={family_hanzi}^{given_hanzi}")
    attrs = read_instance_attributes(encode(ds, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
    assert attrs.patient_name_alphabetic == family
    assert attrs.patient_name_ideographic == f"{family_hanzi}^{given_hanzi}"


def test_iso_2022_ir_58_escape_sequences_do_not_reach_the_index() -> None:
    ds = make_image(charset=["", "ISO 2022 IR 58"], patient_name="x")
    ds["PatientName"] = DataElement(
        0x00100010, "PN", b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
    )
    attrs = read_instance_attributes(encode(ds), ExplicitVRLittleEndian)
    assert attrs.patient_name == "Zhang^XiaoDong=张^小东"
    assert attrs.patient_name_ideographic == "张^小东"
    assert "\x1b" not in attrs.patient_name


def test_deflated_data_set_is_read() -> None:
    ds = make_ecg()
    raw = encode(ds)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(raw) + compressor.flush()
    attrs = read_instance_attributes(deflated, DeflatedExplicitVRLittleEndian)
    assert attrs.sop_instance_uid == ds.SOPInstanceUID
    assert attrs.patient_name == "Li^Hua=李^华"
    assert attrs.modality == "ECG"


def test_corrupt_deflate_stream_is_refused() -> None:
    with pytest.raises(InvalidInstanceError, match="inflated"):
        read_instance_attributes(b"\xff" * 64, DeflatedExplicitVRLittleEndian)


def test_multiframe_attributes_are_read() -> None:
    ds = make_image()
    ds.NumberOfFrames = 12
    attrs = read_instance_attributes(encode(ds), ExplicitVRLittleEndian)
    assert attrs.number_of_frames == 12
    assert attrs.instance_number == 1
    assert attrs.series_number == 1


@given(st.binary(max_size=300))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    """Whatever arrives, the reader answers with attributes or InvalidInstanceError, nothing else."""
    try:
        attrs = read_instance_attributes(data, ExplicitVRLittleEndian)
    except InvalidInstanceError as exc:
        comment = exc.comment
    else:
        comment = ""
        assert attrs.sop_instance_uid.replace(".", "").isdigit()
    assert len(comment) <= 64


@pytest.mark.parametrize("vr", [b"US", b"FD", b"UL", b"OB", b"SQ"])
def test_a_specific_character_set_with_a_wrong_vr_is_read_or_refused(vr: bytes) -> None:
    """Regression: sent as US, its values were numbers and joining them raised TypeError (C-STORE 0xC211)."""
    data = bytearray(encode(make_image(charset="ISO_IR 192")))
    assert data[:6] == b"\x08\x00\x05\x00CS"
    if vr in (b"OB", b"SQ"):  # long form: 2 reserved bytes and a 4-byte length
        length = int.from_bytes(data[6:8], "little")
        data[4:8] = vr + b"\x00\x00" + length.to_bytes(4, "little")
    else:
        data[4:6] = vr
    try:
        attrs = read_instance_attributes(bytes(data), ExplicitVRLittleEndian)
    except InvalidInstanceError as exc:
        comment = exc.comment
    else:
        comment = ""
        assert isinstance(attrs.specific_character_set, str)
    assert len(comment) <= 64
