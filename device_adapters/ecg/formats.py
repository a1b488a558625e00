"""Which reader a file needs: by content first, then by name.

Content decides where it can (an SCP-ECG Section 0 header, an XML
document); the name only tells CSV from text that is not an ECG and marks
WFDB headers (``.hea``), whose signal files carry no signature of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

from device_adapters.ecg.aecg import read_hl7_aecg
from device_adapters.ecg.csv_table import read_csv
from device_adapters.ecg.errors import EcgImportError, UnknownEcgFormatError
from device_adapters.ecg.record import EcgFormat, EcgRecord
from device_adapters.ecg.scp import looks_like_scp_ecg, read_scp_ecg
from device_adapters.ecg.wfdb_record import read_wfdb_files

__all__ = ["detect_format", "read_ecg"]

_XML_START = (b"<?xml", b"<")


def detect_format(name: str, data: bytes) -> EcgFormat:
    """The format of one file, or UnknownEcgFormatError naming what was looked for."""
    suffix = PurePath(name).suffix.lower()
    if suffix == ".hea":
        return EcgFormat.WFDB
    if looks_like_scp_ecg(data):
        return EcgFormat.SCP_ECG
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(_XML_START):
        return EcgFormat.HL7_AECG
    if suffix in (".csv", ".txt", ".tsv"):
        return EcgFormat.CSV
    if suffix == ".dat":
        raise EcgImportError(
            f"{PurePath(name).name[:80]!r} looks like a WFDB signal file; send it with its .hea header"
        )
    if suffix == ".scp":
        return EcgFormat.SCP_ECG  # damaged beyond recognition: let the reader say where
    raise UnknownEcgFormatError(
        f"{PurePath(name).name[:80]!r} is not a format teleconsult imports: not SCP-ECG (no Section 0 "
        "header), not XML (HL7 aECG), not a WFDB header (.hea) and not named .csv"
    )


def read_ecg(files: Mapping[str, bytes], *, scp_text_encoding: str | None = None) -> EcgRecord:
    """The ECG in ``files`` (file name -> content): one file, or a WFDB header and its signal files."""
    if not files:
        raise EcgImportError("no file was given")
    if len(files) > 1 or any(PurePath(name).suffix.lower() == ".hea" for name in files):
        return read_wfdb_files(files)
    ((name, data),) = files.items()
    if not data:
        raise EcgImportError(f"{PurePath(name).name[:80]!r} is empty")
    kind = detect_format(name, data)
    if kind is EcgFormat.SCP_ECG:
        return read_scp_ecg(data, text_encoding=scp_text_encoding)
    if kind is EcgFormat.HL7_AECG:
        return read_hl7_aecg(data)
    if kind is EcgFormat.CSV:
        return read_csv(data)
    return read_wfdb_files(files)
