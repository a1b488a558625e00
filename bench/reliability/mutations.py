"""Seeded mutations of synthetic DICOM instances: the hostile files of the issue's row 4.

A generic byte fuzzer mostly produces files that fail at the first element;
the classes that hurt servers (a length that promises gigabytes, a deflated
data set that inflates to gigabytes, ``../`` in a UID, a preamble that is
also a ZIP or a shell script, pixel dimensions whose product overflows 32
bits, character sets that do not decode) need to know where the elements
are. So each mutant starts from a valid synthetic instance (an ultrasound
image or a 12-lead ECG, ``2.25.`` UIDs, never patient data) whose elements
are located, and one named mutation changes it.

Everything is a function of ``(mutation, seed)``: ``mutate(seed, name)``
gives the same bytes on every machine, so a failure in a run of 10,000
names the one call that reproduces it. UIDs are derived from the seed, so
two seeds never share an instance (a shared UID would make the second a new
version of the first, and the check afterwards would count the first lost).

``expect`` says what a sound server does with the mutant: ``stored`` (a
valid file, however odd its preamble), ``refused`` (it cannot be stored
safely), or ``either`` (valid enough to keep as received, or refused
clearly: both are fine, a crash or a 5xx is not).
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

__all__ = [
    "DEFLATED",
    "ECG_12_LEAD",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "MUTATIONS",
    "US_IMAGE",
    "Mutant",
    "base_instance",
    "encode_file_meta",
    "mutate",
    "mutation_names",
    "walk",
]

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ECG_12_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

STORED, REFUSED, EITHER = "stored", "refused", "either"

# A deflate bomb's data set inflates to this much (a single OB element of zeros).
BOMB_BYTES = 2 << 30

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_PREAMBLE = b"\x00" * 128

_SOP_INSTANCE_UID = 0x00080018
_SOP_CLASS_UID = 0x00080016
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_CHARSET = 0x00080005
_PATIENT_NAME = 0x00100010
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True, slots=True)
class Element:
    """Where one top-level element of an encoded data set is."""

    tag: int
    offset: int
    header: int
    vr: bytes  # b"" in implicit VR
    length: int

    @property
    def value_offset(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.header + self.length


def walk(data: bytes, *, explicit: bool = True, little: bool = True) -> list[Element]:
    """The top-level elements of a data set we encoded (defined lengths only)."""
    order = "<" if little else ">"
    found = []
    position = 0
    while position + 8 <= len(data):
        group, element = struct.unpack_from(order + "HH", data, position)
        tag = group << 16 | element
        if explicit:
            vr = data[position + 4 : position + 6]
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from(order + "I", data, position + 8)
                header = 12
            else:
                (length,) = struct.unpack_from(order + "H", data, position + 6)
                header = 8
        else:
            vr = b""
            (length,) = struct.unpack_from(order + "I", data, position + 4)
            header = 8
        found.append(Element(tag, position, header, vr, length))
        position += header + length
    return found


def _find(elements: list[Element], tag: int) -> Element:
    return next(element for element in elements if element.tag == tag)


def _short(element: int, vr: bytes, value: bytes, pad: bytes = b"\x00") -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """A File Meta group (PS3.10 7.1) for these UIDs, whatever they hold (bytes as UTF-8)."""
    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _short(0x0002, b"UI", sop_class_uid.encode("utf-8", "surrogateescape")),
            _short(0x0003, b"UI", sop_instance_uid.encode("utf-8", "surrogateescape")),
            _short(0x0010, b"UI", transfer_syntax_uid.encode("utf-8", "surrogateescape")),
            _short(0x0012, b"UI", b"1.2.826.0.1.3680043.10.1"),
        )
    )
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


@dataclass(frozen=True, slots=True)
class Mutant:
    """One hostile instance: the data set as a C-STORE carries it, and the Part 10 file STOW-RS sends.

    ``sop_instance_uid`` is the UID the mutant claims (File Meta, C-STORE
    command); a server that stores it must index it under that UID with the
    data set's SHA-256.
    """

    mutation: str
    seed: int
    expect: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set: bytes
    preamble: bytes = _PREAMBLE
    # the File Meta group as STOW-RS sends it; None: a sound one from the three UIDs
    meta: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data_set).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.mutation}#{self.seed}"

    def file_meta(self) -> bytes:
        if self.meta is not None:
            return self.meta
        return encode_file_meta(self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax_uid)

    def part10(self) -> bytes:
        return self.preamble + b"DICM" + self.file_meta() + self.data_set


# -- the valid instances mutations start from ------------------------------------------------------


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(125) | 1 << 124}"


def base_instance(rng: random.Random, kind: str = "us") -> Dataset:
    """A small valid instance: ``us`` (16x16 8-bit image) or ``ecg`` (12 leads, 0.2 s)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ECG_12_LEAD if kind == "ecg" else US_IMAGE
    ds.SOPInstanceUID = _uid(rng)
    ds.StudyDate = "20261124"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"M{rng.randrange(10**8):08d}"
    ds.Modality = "ECG" if kind == "ecg" else "US"
    ds.InstitutionName = "Township Health Centre 1"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Zhao^Fuzz=赵^测试"
    ds.PatientID = f"FUZZ{rng.randrange(10**6):06d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = _uid(rng)
    ds.SeriesInstanceUID = _uid(rng)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if kind == "ecg":
        group = Dataset()
        group.WaveformOriginality = "ORIGINAL"
        group.NumberOfWaveformChannels = 12
        group.NumberOfWaveformSamples = 100
        group.SamplingFrequency = 500
        group.WaveformBitsAllocated = 16
        group.WaveformSampleInterpretation = "SS"
        channels = []
        for _ in range(12):
            channel = Dataset()
            channel.ChannelSensitivity = 1
            channel.ChannelSampleSkew = 0
            channel.WaveformBitsStored = 16
            channels.append(channel)
        group.ChannelDefinitionSequence = channels
        group.WaveformData = rng.randbytes(12 * 100 * 2)
        ds.WaveformSequence = [group]
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 16
        ds.Columns = 16
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = rng.randbytes(256)
    return ds


def _encode(ds: Dataset, transfer_syntax_uid: str = EXPLICIT_LE) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax_uid != EXPLICIT_BE
    fp.is_implicit_VR = transfer_syntax_uid == IMPLICIT_LE
    ds.set_original_encoding(fp.is_implicit_VR, fp.is_little_endian, None)
    write_dataset(fp, ds)
    data = fp.getvalue()
    if transfer_syntax_uid == DEFLATED:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


@dataclass(frozen=True, slots=True)
class _Start:
    """A valid instance and its explicit VR little endian encoding, located element by element."""

    ds: Dataset
    data: bytes
    elements: list[Element]

    def mutant(self, name: str, seed: int, expect: str, data: bytes, **changes: object) -> Mutant:
        mutant = Mutant(
            mutation=name,
            seed=seed,
            expect=expect,
            sop_class_uid=str(self.ds.SOPClassUID),
            sop_instance_uid=str(self.ds.SOPInstanceUID),
            transfer_syntax_uid=EXPLICIT_LE,
            data_set=data,
        )
        return replace(mutant, **changes) if changes else mutant  # type: ignore[arg-type]


def _start(rng: random.Random, kind: str | None = None) -> _Start:
    ds = base_instance(rng, kind or rng.choice(("us", "us", "ecg")))
    data = _encode(ds)
    return _Start(ds, data, walk(data))


# -- the mutations -----------------------------------------------------------------------------------

_Mutation = Callable[[random.Random, int], Mutant]


def _valid(rng: random.Random, seed: int) -> Mutant:
    """A control: a sound instance in one of the four uncompressed transfer syntaxes, must be stored."""
    start = _start(rng)
    syntax = rng.choice((EXPLICIT_LE, EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED))
    return start.mutant("valid", seed, STORED, _encode(start.ds, syntax), transfer_syntax_uid=syntax)


def _truncated(rng: random.Random, seed: int) -> Mutant:
    """Cut anywhere: inside a header, inside a value, or after the indexed attributes."""
    start = _start(rng)
    element = rng.choice(start.elements)
    cut = rng.randrange(element.offset + 1, element.end) if element.end > element.offset + 1 else element.end
    return start.mutant("truncated", seed, EITHER, start.data[:cut])


def _huge_length(rng: random.Random, seed: int) -> Mutant:
    """A length field that promises far more than follows (up to 4 GiB)."""
    start = _start(rng)
    element = rng.choice(start.elements)
    data = bytearray(start.data)
    if element.header == 12:
        value = rng.choice((0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, element.length + (1 << 20)))
        struct.pack_into("<I", data, element.offset + 8, value)
    else:
        struct.pack_into("<H", data, element.offset + 6, rng.choice((0xFFFF, 0xFFFE, element.length + 999)))
    return start.mutant("huge_length", seed, EITHER, bytes(data))


def _undefined_length(rng: random.Random, seed: int) -> Mutant:
    """A non-sequence element rewritten with the undefined length 0xFFFFFFFF and no delimiter."""
    start = _start(rng)
    element = rng.choice([e for e in start.elements if e.vr != b"SQ"])
    header = struct.pack("<HH2sHI", element.tag >> 16, element.tag & 0xFFFF, b"UN", 0, 0xFFFFFFFF)
    value = start.data[element.value_offset : element.end]
    data = start.data[: element.offset] + header + value + start.data[element.end :]
    return start.mutant("undefined_length", seed, EITHER, data)


_VRS = (
    b"AE",
    b"CS",
    b"DA",
    b"DS",
    b"FD",
    b"IS",
    b"OB",
    b"OW",
    b"PN",
    b"SQ",
    b"UI",
    b"UL",
    b"UN",
    b"US",
    b"UT",
)


def _wrong_vr(rng: random.Random, seed: int) -> Mutant:
    """An element's VR replaced by another (long or short form kept as it was) or by garbage."""
    start = _start(rng)
    element = rng.choice(start.elements)
    candidates = [vr for vr in _VRS if (vr in _LONG_VRS) == (element.header == 12) and vr != element.vr]
    vr = rng.choice([*candidates, b"\x00\x00", b"zz", b"\xff\xfe"])
    data = bytearray(start.data)
    data[element.offset + 4 : element.offset + 6] = vr
    return start.mutant("wrong_vr", seed, EITHER, bytes(data))


def _set_value(start: _Start, tag: int, value: bytes) -> bytes:
    """The data set with one short-form element's value replaced (padded to even length)."""
    element = _find(start.elements, tag)
    if len(value) % 2:
        value += b"\x00"
    header = start.data[element.offset : element.offset + 6] + struct.pack("<H", len(value))
    return start.data[: element.offset] + header + value + start.data[element.end :]


_TRAVERSALS = (
    "../../../canary/{n}",
    "../../../../../../../../tmp/canary-{n}",
    "..\\..\\..\\canary\\{n}",
    "/tmp/canary-{n}",
    "2.25.{n}/../../../canary",
    "2.25.{n}/../../../../canary/x",
    "./{n}",
    "%2e%2e%2f%2e%2e%2fcanary{n}",
    "2.25.{n}\x00/../../canary",
)


def _uid_traversal(rng: random.Random, seed: int) -> Mutant:
    """``../`` (and other path syntax) in the SOP Instance UID and the File Meta: a server that
    names files after UIDs would write outside its data directory."""
    start = _start(rng)
    uid = rng.choice(_TRAVERSALS).format(n=seed)
    target = rng.choice((_SOP_INSTANCE_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID))
    data = _set_value(start, target, uid.encode("utf-8"))
    claimed = uid if target == _SOP_INSTANCE_UID else str(start.ds.SOPInstanceUID)
    return start.mutant("uid_traversal", seed, REFUSED, data, sop_instance_uid=claimed)


_BAD_UIDS = (
    "2.25.{n}abc",
    "2.25. {n}",
    "2.25.0{n}",
    "2.25.{n}.",
    "2.25..{n}",
    "2.25.{n}" + ".9" * 40,
    "2.25.{n}\x00\x00x",
    "２.２５.{n}",
    "2.25.{n};DROP TABLE instance",
    "2.25.{n}'--",
    "<script>{n}</script>",
    "2.25.-{n}",
    "",
)


def _uid_chars(rng: random.Random, seed: int) -> Mutant:
    """Non-UID characters (letters, spaces, NUL, full-width digits, quotes), too long, leading zeros."""
    start = _start(rng)
    uid = rng.choice(_BAD_UIDS).format(n=seed)
    target = rng.choice((_SOP_INSTANCE_UID, _SOP_CLASS_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID))
    data = _set_value(start, target, uid.encode("utf-8"))
    changes: dict[str, object] = {}
    if target == _SOP_INSTANCE_UID:
        changes["sop_instance_uid"] = uid
    elif target == _SOP_CLASS_UID:
        changes["sop_class_uid"] = uid
    return start.mutant("uid_chars", seed, REFUSED, data, **changes)


_POLYGLOTS = (
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # a ZIP local file header
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
    b"<html><script>alert(document.cookie)</script>",
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",  # a PE executable
    b"#!/bin/sh\nrm -rf / # ",
    b"II*\x00\x08\x00\x00\x00",  # TIFF
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a\x01\x00\x01\x00",
)


def _preamble_polyglot(rng: random.Random, seed: int) -> Mutant:
    """A preamble that makes the file also a ZIP, PDF, HTML, PE, shell script ...: still valid DICOM."""
    start = _start(rng)
    head = rng.choice(_POLYGLOTS)
    preamble = (head + rng.randbytes(128))[:128]
    return start.mutant("preamble_polyglot", seed, STORED, start.data, preamble=preamble)


def _meta_broken(rng: random.Random, seed: int) -> Mutant:
    """The File Meta (STOW-RS only; a C-STORE carries none): no transfer syntax, a hostile one,
    a huge length, a lying group length, or none at all."""
    start = _start(rng)
    sop_class, sop_instance = str(start.ds.SOPClassUID), str(start.ds.SOPInstanceUID)
    choice = rng.randrange(6)
    meta: bytes
    if choice == 0:  # no Transfer Syntax UID
        meta = encode_file_meta(sop_class, sop_instance, EXPLICIT_LE)
        meta = meta[: meta.index(b"\x02\x00\x10\x00UI")] + meta[meta.index(b"\x02\x00\x12\x00UI") :]
    elif choice == 1:
        meta = encode_file_meta(
            sop_class, sop_instance, rng.choice(("../../etc/passwd", "1.2.3.4.5", "x" * 70))
        )
    elif choice == 2:  # a UID element whose length runs past the end of the file
        meta = encode_file_meta(sop_class, sop_instance, EXPLICIT_LE)
        at = meta.index(b"\x02\x00\x03\x00UI") + 6
        meta = meta[:at] + struct.pack("<H", 0xFFFF) + meta[at + 2 :]
    elif choice == 3:  # the group length lies
        meta = encode_file_meta(sop_class, sop_instance, EXPLICIT_LE)
        meta = meta[:8] + struct.pack("<I", rng.choice((0, 3, 0xFFFFFFFF))) + meta[12:]
    elif choice == 4:  # the File Meta left out: the data set right after DICM
        meta = b""
    else:  # the meta's SOP Instance UID is another instance's
        meta = encode_file_meta(sop_class, _uid(rng), EXPLICIT_LE)
    return start.mutant("meta_broken", seed, EITHER, start.data, meta=meta)


def _part10_in_data_set(rng: random.Random, seed: int) -> Mutant:
    """A whole Part 10 file (preamble, DICM, File Meta) where the data set should begin."""
    start = _start(rng)
    meta = encode_file_meta(str(start.ds.SOPClassUID), str(start.ds.SOPInstanceUID), EXPLICIT_LE)
    data = (_PREAMBLE if rng.random() < 0.5 else b"") + b"DICM" + meta + start.data
    return start.mutant("part10_in_data_set", seed, REFUSED, data)


@functools.lru_cache(maxsize=4)
def _zeros_deflated(size: int) -> bytes:
    """``size`` zero bytes as non-final raw deflate blocks, with no back-reference before their start.

    64 MiB of zeros compressed once and repeated: 2 GiB cost 0.1 s rather than 4.
    """
    block = 64 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    whole = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = b""
    if size % block:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        rest = compressor.compress(bytes(size % block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return whole * (size // block) + rest


def deflate_bomb(rng: random.Random, seed: int, size: int = BOMB_BYTES) -> Mutant:
    """Deflated Explicit VR Little Endian whose data set inflates to ``size`` bytes (2 GiB): the
    indexed attributes, then one OB element of zeros (pixel data, or a private element of an ECG)."""
    start = _start(rng, rng.choice(("us", "ecg")))
    head = bytearray(start.data)
    last = start.elements[-1]
    if last.tag == _PIXEL_DATA:
        head = head[: last.offset]
        tag = _PIXEL_DATA
    else:
        tag = 0x00990010  # a private element after the waveform
    payload = size - len(head) - 12
    payload -= payload % 2
    head += struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"OB", 0, payload)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = (
        compressor.compress(bytes(head))
        + compressor.flush(zlib.Z_FULL_FLUSH)
        + _zeros_deflated(payload)
        + b"\x03\x00"  # a final, empty fixed-Huffman block
    )
    return start.mutant("deflate_bomb", seed, EITHER, data, transfer_syntax_uid=DEFLATED)


def _deflate_broken(rng: random.Random, seed: int) -> Mutant:
    """Deflated transfer syntax over data that is not deflate, or a deflate stream cut short."""
    start = _start(rng)
    deflated = _encode(start.ds, DEFLATED)
    data = start.data if rng.random() < 0.5 else deflated[: rng.randrange(1, len(deflated))]
    return start.mutant("deflate_broken", seed, EITHER, data, transfer_syntax_uid=DEFLATED)


def _dimension_overflow(rng: random.Random, seed: int) -> Mutant:
    """Rows x Columns x Frames x bits beyond 32 (and 64) bits, with 64 bytes of pixel data."""
    start = _start(rng, "us")
    ds = start.ds
    ds.Rows = rng.choice((65535, 65535, 0, 1))
    ds.Columns = 65535
    ds.NumberOfFrames = rng.choice(("2147483647", "65536", "99999999999", "-1", "0"))
    ds.BitsAllocated = rng.choice((16, 32, 64))
    ds.BitsStored = min(int(ds.BitsAllocated), 16)
    ds.HighBit = int(ds.BitsStored) - 1
    ds.SamplesPerPixel = rng.choice((1, 3, 65535))
    ds.PixelData = rng.randbytes(64)
    return start.mutant("dimension_overflow", seed, EITHER, _encode(ds))


_CHARSETS: tuple[tuple[str, bytes], ...] = (
    ("ISO_IR 999", b"Zhao^Fuzz"),
    ("ISO_IR 192", b"\xff\xfe\xc0\xaf^\xed\xa0\x80"),  # invalid UTF-8, surrogates
    ("GB18030", b"\x81\x30\x81^\xff\xff"),
    ("ISO 2022 IR 58", b"\x1b$)A\xd5\xd4^\x1b$)"),  # escape cut short
    ("\\ISO 2022 IR 87\\ISO 2022 IR 159", b"\x1b$B\x00\x1b(J\x1b"),
    ("ISO_IR 100\\" * 20 + "ISO_IR 100", b"M\xfcller"),
    ("\x1b%G", "赵^测试".encode()),
    ("GBK", b"\x80\x80\x80^\xfe\xff"),
    ("ISO_IR 13", b"\xff\xfe\xfd"),
    ("", b"\xe8\xb5\xb5^\xe6\xb5\x8b"),  # UTF-8 bytes without a character set
)


def _bad_charset(rng: random.Random, seed: int) -> Mutant:
    """Unknown, malformed or lying Specific Character Sets, and names that do not decode in them."""
    start = _start(rng)
    charset, name = rng.choice(_CHARSETS)
    # PatientName comes after SpecificCharacterSet: replace it first, then the character set
    data = _set_value(start, _PATIENT_NAME, name)
    renamed = _Start(start.ds, data, walk(data))
    return start.mutant("bad_charset", seed, EITHER, _set_value(renamed, _CHARSET, charset.encode("latin-1")))


def _deep_sequence(rng: random.Random, seed: int) -> Mutant:
    """Sequences nested thousands deep (undefined lengths) among the indexed attributes."""
    start = _start(rng)
    depth = rng.choice((200, 1000, 5000, 20000))
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    opening = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF) + item_start
    nested = opening * depth + (item_end + sequence_end) * depth
    # (0008,1115) sits between StudyDescription (0008,1030) and PatientName (0010,0010)
    at = next(e.offset for e in start.elements if e.tag > 0x00081115)
    return start.mutant("deep_sequence", seed, EITHER, start.data[:at] + nested + start.data[at:])


def _bit_flips(rng: random.Random, seed: int) -> Mutant:
    """1 to 8 random bytes of the data set replaced."""
    start = _start(rng)
    data = bytearray(start.data)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return start.mutant("bit_flips", seed, EITHER, bytes(data))


def _random_bytes(rng: random.Random, seed: int) -> Mutant:
    """No DICOM at all: 0 to 4,096 random bytes (or a run of one byte) as the data set."""
    start = _start(rng)
    size = rng.choice((0, 1, 2, 7, 8, 12, 128, 4096, rng.randrange(4096)))
    data = rng.randbytes(size) if rng.random() < 0.7 else bytes([rng.randrange(256)]) * size
    return start.mutant("random_bytes", seed, REFUSED, data)


def _reordered(rng: random.Random, seed: int) -> Mutant:
    """Two elements swapped (tags out of order), or one element twice."""
    start = _start(rng)
    elements = start.elements
    first, second = sorted(rng.sample(range(len(elements)), 2))
    chunks = [start.data[e.offset : e.end] for e in elements]
    if rng.random() < 0.5:
        chunks[first], chunks[second] = chunks[second], chunks[first]
    else:
        chunks.insert(second, chunks[first])
    return start.mutant("reordered", seed, EITHER, b"".join(chunks))


def _encoding_mismatch(rng: random.Random, seed: int) -> Mutant:
    """The data set encoded in one transfer syntax and declared as another."""
    start = _start(rng)
    encoded, declared = rng.choice(
        (
            (IMPLICIT_LE, EXPLICIT_LE),
            (EXPLICIT_LE, IMPLICIT_LE),
            (EXPLICIT_BE, EXPLICIT_LE),
            (EXPLICIT_LE, EXPLICIT_BE),
        )
    )
    data = _encode(start.ds, encoded)
    return start.mutant("encoding_mismatch", seed, EITHER, data, transfer_syntax_uid=declared)


def _sop_class_mismatch(rng: random.Random, seed: int) -> Mutant:
    """The File Meta (and C-STORE context) claim another SOP class than the data set's."""
    start = _start(rng)
    claimed = ECG_12_LEAD if str(start.ds.SOPClassUID) == US_IMAGE else US_IMAGE
    return start.mutant("sop_class_mismatch", seed, REFUSED, start.data, sop_class_uid=claimed)


# Name -> (mutation, weight). The deflate bomb weighs less: it is 2 MB on the wire and in the store.
MUTATIONS: dict[str, tuple[_Mutation, float]] = {
    "valid": (_valid, 1.0),
    "truncated": (_truncated, 1.0),
    "huge_length": (_huge_length, 1.0),
    "undefined_length": (_undefined_length, 1.0),
    "wrong_vr": (_wrong_vr, 1.0),
    "uid_traversal": (_uid_traversal, 1.0),
    "uid_chars": (_uid_chars, 1.0),
    "preamble_polyglot": (_preamble_polyglot, 1.0),
    "meta_broken": (_meta_broken, 1.0),
    "part10_in_data_set": (_part10_in_data_set, 0.5),
    "deflate_bomb": (deflate_bomb, 0.25),
    "deflate_broken": (_deflate_broken, 0.5),
    "dimension_overflow": (_dimension_overflow, 1.0),
    "bad_charset": (_bad_charset, 1.0),
    "deep_sequence": (_deep_sequence, 0.5),
    "bit_flips": (_bit_flips, 1.0),
    "random_bytes": (_random_bytes, 0.5),
    "reordered": (_reordered, 0.5),
    "encoding_mismatch": (_encoding_mismatch, 0.5),
    "sop_class_mismatch": (_sop_class_mismatch, 0.5),
}


def mutation_names() -> list[str]:
    return list(MUTATIONS)


def mutate(seed: int, name: str | None = None) -> Mutant:
    """The mutant of ``seed``: mutation ``name``, or one drawn by weight from the seed."""
    rng = random.Random(f"teleconsult-malformed:{seed}")
    if name is None:
        names = list(MUTATIONS)
        name = rng.choices(names, weights=[MUTATIONS[n][1] for n in names])[0]
    elif name not in MUTATIONS:
        raise ValueError(f"mutation {name!r}: one of {', '.join(MUTATIONS)}")
    return MUTATIONS[name][0](rng, seed)
