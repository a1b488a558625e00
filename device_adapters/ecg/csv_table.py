"""CSV: one column per lead, one row per sample, details in ``# key: value`` lines.

The layout (docs/devices.md): ``#`` lines with at least ``patient_id``,
``sampling_rate`` and ``units`` (uV, µV or mV), then a header row of lead
names, then one row of numbers per sample. A first column named ``time``,
``t``, ``sample`` or ``index`` is ignored. Commas, semicolons or tabs
separate values (whichever the header row uses). Every row must have a
value for every lead: a ragged file is refused with the line that breaks
it, rather than guessed at.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from device_adapters.ecg.errors import EcgImportError
from device_adapters.ecg.leads import canonical_lead_name
from device_adapters.ecg.metadata import (
    acquired_at,
    collect,
    decode_text,
    device_from,
    filters_from,
    patient_from,
    positive_number,
)
from device_adapters.ecg.record import EcgFormat, EcgRecord, WaveformGroup, quantise

__all__ = ["read_csv"]

_UNITS_TO_UV = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "mv": 1000.0, "millivolt": 1000.0}
_INDEX_COLUMNS = frozenset({"time", "t", "time_s", "time_ms", "sample", "index"})
_DELIMITERS = (",", ";", "\t")


def read_csv(data: bytes) -> EcgRecord:
    """The ECG of a CSV file (see the module docstring for the layout)."""
    text = decode_text(data, "the CSV file")
    lines = text.splitlines()
    meta = collect(line for line in lines if line.lstrip().startswith("#"))
    header_at = next(
        (number for number, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")),
        None,
    )
    if header_at is None:
        raise EcgImportError("the CSV file has no header row of lead names")
    header_line = lines[header_at]
    delimiter = max(_DELIMITERS, key=header_line.count)
    rows = csv.reader(io.StringIO("\n".join(lines[header_at:])), delimiter=delimiter)
    header = [cell.strip() for cell in next(rows)]
    skip = 1 if header and header[0].lower() in _INDEX_COLUMNS else 0
    names = [canonical_lead_name(name) for name in header[skip:]]
    if not names or any(not name for name in names):
        raise EcgImportError(f"line {header_at + 1}: the header row must name every lead column")
    values: list[list[float]] = []
    for offset, row in enumerate(rows):
        number = header_at + 2 + offset
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(header):
            raise EcgImportError(
                f"line {number} has {len(row)} values but the header row has {len(header)} columns "
                "(ragged rows: every sample needs a value for every lead)"
            )
        try:
            values.append([float(cell) for cell in row[skip:]])
        except ValueError:
            bad = next(cell for cell in row[skip:] if not _is_number(cell))
            raise EcgImportError(f"line {number}: {bad.strip()[:20]!r} is not a number") from None
    if not values:
        raise EcgImportError("the CSV file has a header row but no samples")
    rate_text = meta.get("sampling_rate", "")
    if not rate_text.strip():
        raise EcgImportError("the CSV file has no '# sampling_rate: <Hz>' line")
    units = meta.get("units", "").strip()
    scale = _UNITS_TO_UV.get(units.lower())
    if scale is None:
        raise EcgImportError(
            f"the CSV file's '# units:' line must say uV or mV, not {units[:10]!r}"
            if units
            else "the CSV file has no '# units: uV' (or mV) line"
        )
    table = np.asarray(values, dtype=np.float64) * scale
    leads = tuple(quantise(table[:, column], name) for column, name in enumerate(names))
    group = WaveformGroup(
        "RHYTHM",
        positive_number(rate_text, "the CSV file's sampling_rate"),
        leads,
        filters=filters_from(meta, "the CSV file's"),
    )
    return EcgRecord(
        source_format=EcgFormat.CSV,
        patient=patient_from(meta, "the CSV file's"),
        groups=(group,),
        acquired_at=acquired_at(meta, "the CSV file's"),
        device=device_from(meta),
    )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
