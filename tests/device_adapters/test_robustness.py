"""Damaged input: every reader either reads it or refuses it with an import error, never anything else.

SCP-ECG mutations have their CRCs made right again, so the structural
checks behind the CRCs are exercised too (a cart's firmware bug is not a
transfer error).
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.ecg.errors import EcgImportError
from device_adapters.ecg.formats import read_ecg
from tests.device_adapters.scp_writer import ScpSpec, crc, write_scp
from tests.device_adapters.writers import synthetic_leads, write_aecg, write_csv

_LEADS = synthetic_leads(("I", "II", "V1"), seconds=0.5)
_SCP = write_scp(ScpSpec(leads=_LEADS))
_HUFFMAN_SCP = write_scp(ScpSpec(leads=_LEADS, use_huffman=True, difference_order=2))


def _fix_crcs(data: bytearray) -> bytes:
    """Recompute every section CRC Section 0 points to, then the record's."""
    try:
        section0_length = struct.unpack_from("<I", data, 10)[0]
        for pos in range(22, 6 + section0_length - 9, 10):
            _, length, index = struct.unpack_from("<HII", data, pos)
            start = index - 1
            if length >= 16 and index >= 7 and start + length <= len(data):
                struct.pack_into("<H", data, start, crc(bytes(data[start + 2 : start + length])))
    except struct.error:
        pass
    if len(data) >= 6:
        struct.pack_into("<H", data, 0, crc(bytes(data[2:])))
    return bytes(data)


def _read(files: dict[str, bytes]) -> None:
    """Read or refuse: a record with a patient and waveforms, or an import error that says why."""
    refusal = ""
    try:
        record = read_ecg(files)
    except EcgImportError as exc:
        refusal = str(exc).strip() or "(empty)"
    if refusal:
        assert refusal != "(empty)", "a refusal must say what is wrong"
        return
    assert record.patient.patient_id.strip()
    assert record.groups


@given(
    base=st.sampled_from([_SCP, _HUFFMAN_SCP]),
    edits=st.lists(
        st.tuples(st.integers(0, len(_HUFFMAN_SCP) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_mutated_scp_ecg(base: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    _read({"cart.scp": _fix_crcs(data)})


@given(cut=st.integers(0, len(_SCP)))
def test_scp_ecg_cut_anywhere(cut: int) -> None:
    _read({"cart.scp": _SCP[:cut] or b"\x00"})


@given(
    name=st.sampled_from(["ecg.xml", "ecg.csv", "ecg.scp", "x.bin", "rec.hea"]),
    data=st.binary(min_size=1, max_size=300),
)
def test_random_bytes(name: str, data: bytes) -> None:
    _read({name: data})


@given(cut=st.integers(1, 4000), junk=st.text(max_size=20))
def test_cut_text_formats(cut: int, junk: str) -> None:
    leads = {"I": np.arange(200) % 50, "II": np.arange(200) % 7}
    for name, document in (("ecg.xml", write_aecg(leads)), ("ecg.csv", write_csv(leads))):
        _read({name: document[: cut % len(document) + 1] + junk.encode()})
