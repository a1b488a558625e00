"""WFDB records (PhysioNet): a ``.hea`` header and the signal files it names, read with ``wfdb``.

The samples are the digital values wfdb reads (``physical=False``); each
signal's ADC gain (counts per physical unit) and baseline (the count of 0)
become its sensitivity and baseline in microvolts. A WFDB header has no
patient fields, so patient and acquisition details come from ``# key:
value`` comment lines, as in CSV (docs/devices.md); the header's base date
and time are the acquisition time when no ``# acquired:`` line gives one.
wfdb reads header text as ASCII, so the comments are read here from the
header's bytes (UTF-8 or GB18030).

Signal file names in a header are checked before wfdb opens anything: a
plain name in the header's own folder, never a path. Multi-segment records
and missing samples are refused.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.leads import canonical_lead_name
from device_adapters.ecg.metadata import (
    acquired_at,
    collect,
    decode_text,
    device_from,
    filters_from,
    patient_from,
)
from device_adapters.ecg.record import EcgFormat, EcgRecord, Lead, WaveformGroup

__all__ = ["read_wfdb", "read_wfdb_files", "signal_file_names"]

_TO_UV = {"uv": 1.0, "µv": 1.0, "mv": 1000.0, "v": 1_000_000.0}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}$")


def _lines(header: bytes) -> tuple[list[str], list[str]]:
    text = decode_text(header, "the WFDB header")
    specs, comments = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
        elif stripped:
            specs.append(stripped)
    return specs, comments


def signal_file_names(header: bytes) -> list[str]:
    """The signal files a header names, in order, each checked to be a plain file name."""
    specs, _ = _lines(header)
    if not specs:
        raise EcgImportError("the WFDB header has no record line")
    record = specs[0].split()
    if "/" in record[0]:
        raise UnsupportedEcgError(
            "the WFDB record is multi-segment; only single-segment records are supported"
        )
    try:
        count = int(record[1]) if len(record) > 1 else 0
    except ValueError:
        raise EcgImportError(f"the WFDB record line gives {record[1][:10]!r} signals, not a number") from None
    if count == 0:
        raise EcgImportError("the WFDB header describes no signals")
    if len(specs) < 1 + count:
        raise EcgImportError(f"the WFDB header announces {count} signals but describes {len(specs) - 1}")
    names = []
    for spec in specs[1 : 1 + count]:
        name = spec.split()[0]
        if not _PLAIN_NAME.match(name) or name.endswith(".hea"):
            raise EcgImportError(
                f"the WFDB header names signal file {name[:40]!r}; only plain file names are read"
            )
        if name not in names:
            names.append(name)
    return names


def read_wfdb(header_path: Path) -> EcgRecord:
    """The ECG of the record whose header is ``header_path`` (its signal files beside it)."""
    import wfdb  # heavy (pandas, scipy): loaded on the first WFDB file only

    header = header_path.read_bytes()
    for name in signal_file_names(header):
        if not (header_path.parent / name).is_file():
            raise EcgImportError(f"the WFDB header names signal file {name!r}, which is not beside it")
    _, comments = _lines(header)
    meta = collect(comments)
    try:
        record = wfdb.rdrecord(str(header_path.with_suffix("")), physical=False)
    except Exception as exc:  # wfdb parses untrusted files: whatever it raises means "cannot read"
        raise EcgImportError(f"wfdb cannot read the record: {type(exc).__name__}: {str(exc)[:200]}") from None
    signals = np.asarray(record.d_signal)
    if signals.ndim != 2 or signals.shape[0] == 0:
        raise EcgImportError("the WFDB record has no samples")
    from wfdb.io._signal import INVALID_SAMPLE_VALUE

    leads = []
    for index, name in enumerate(record.sig_name):
        column = signals[:, index].astype(np.int64)
        invalid = INVALID_SAMPLE_VALUE.get(str(record.fmt[index]))
        if invalid is not None and np.any(column == invalid):
            raise UnsupportedEcgError(f"WFDB signal {name!r} has missing samples, which are not supported")
        unit = str(record.units[index] or "mV").strip().lower()
        factor = _TO_UV.get(unit)
        if factor is None:
            raise UnsupportedEcgError(f"WFDB signal {name!r} is in {unit!r}; uV, mV and V are supported")
        gain = float(record.adc_gain[index]) or 200.0  # WFDB: a gain of 0 means the default, 200
        sensitivity = factor / gain
        leads.append(
            Lead(canonical_lead_name(str(name)), column, sensitivity, -record.baseline[index] * sensitivity)
        )
    acquired = acquired_at(meta, "the WFDB header's")
    if acquired is None and record.base_date is not None and record.base_time is not None:
        acquired = datetime.combine(record.base_date, record.base_time)
    return EcgRecord(
        source_format=EcgFormat.WFDB,
        patient=patient_from(meta, "the WFDB header's"),
        groups=(
            WaveformGroup(
                "RHYTHM", float(record.fs), tuple(leads), filters=filters_from(meta, "the WFDB header's")
            ),
        ),
        acquired_at=acquired,
        device=device_from(meta),
    )


def read_wfdb_files(files: Mapping[str, bytes]) -> EcgRecord:
    """A record given as file contents by name (an upload): one ``.hea`` and the signal files it names."""
    headers = [name for name in files if name.lower().endswith(".hea")]
    if len(headers) != 1:
        raise EcgImportError(f"a WFDB record needs exactly one .hea header; {len(headers)} were given")
    header_name = headers[0]
    needed = signal_file_names(files[header_name])
    missing = [name for name in needed if name not in files]
    if missing:
        raise EcgImportError(f"the WFDB header names signal file {missing[0]!r}, which was not sent with it")
    extra = sorted(set(files) - {header_name, *needed})
    if extra:
        raise EcgImportError(f"{extra[0]!r} is not a signal file the WFDB header names")
    stem = Path(header_name).stem
    if not _PLAIN_NAME.match(stem):
        raise EcgImportError(f"the WFDB header's file name {header_name[:40]!r} is not a plain file name")
    with tempfile.TemporaryDirectory(prefix="teleconsult-wfdb-") as folder:
        header_path = Path(folder) / f"{stem}.hea"
        header_path.write_bytes(files[header_name])
        for name in needed:
            (Path(folder) / name).write_bytes(files[name])
        return read_wfdb(header_path)
