"""Test-side writers of synthetic ECG files: HL7 aECG, CSV and WFDB (SCP-ECG: scp_writer.py).

Every file is made up here from a synthetic signal; no real patient's ECG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STANDARD_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def synthetic_leads(
    names: tuple[str, ...] = STANDARD_12, *, rate: int = 500, seconds: float = 10.0, amplitude: int = 300
) -> dict[str, np.ndarray]:
    """Integer counts: a 1.1 Hz 'beat' with a spike per cycle, different per lead."""
    t = np.arange(int(rate * seconds)) / rate
    leads = {}
    for index, name in enumerate(names):
        wave = np.sin(2 * np.pi * 1.1 * t + index) * amplitude
        spike = (np.mod(t * 1.1, 1.0) < 0.02) * (4 * amplitude if index % 2 else -3 * amplitude)
        leads[name] = np.rint(wave + spike + 5 * index).astype(np.int64)
    return leads


def _slist(values: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in values)


def write_aecg(
    leads: dict[str, np.ndarray],
    *,
    scale_uv: float = 5.0,
    origin_uv: float = 0.0,
    scale_unit: str = "uV",
    increment_s: float = 0.002,
    median: dict[str, np.ndarray] | None = None,
    family: str = "李",
    given: str = "华",
    patient_id: str = "A0001",
    encoding: str = "UTF-8",
) -> bytes:
    scale = scale_uv / 1000 if scale_unit == "mV" else scale_uv
    origin = origin_uv / 1000 if scale_unit == "mV" else origin_uv

    def sequence_set(group: dict[str, np.ndarray]) -> str:
        parts = [
            '<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
            '<value xsi:type="GLIST_TS"><head value="20261124093015.000"/>'
            f'<increment value="{increment_s}" unit="s"/></value></sequence></component>'
        ]
        for name, values in group.items():
            parts.append(
                f'<component><sequence><code code="MDC_ECG_LEAD_{name.upper()}" '
                'codeSystem="2.16.840.1.113883.6.24"/>'
                f'<value xsi:type="SLIST_PQ"><origin value="{origin}" unit="{scale_unit}"/>'
                f'<scale value="{scale}" unit="{scale_unit}"/><digits>{_slist(values)}</digits></value>'
                "</sequence></component>"
            )
        return "<component><sequenceSet>" + "".join(parts) + "</sequenceSet></component>"

    derived = ""
    if median is not None:
        derived = (
            '<derivation><derivedSeries><code code="REPRESENTATIVE_BEAT" codeSystem="2.16.840.1.113883.5.4"/>'
            + sequence_set(median)
            + "</derivedSeries></derivation>"
        )
    filters = "".join(
        f'<controlVariable><controlVariable><code code="MDC_ECG_CTL_VBL_ATTR_FILTER_{kind}"/>'
        '<component><controlVariable><code code="MDC_ECG_CTL_VBL_ATTR_FILTER_CUTOFF_FREQ"/>'
        f'<value xsi:type="PQ" value="{value}" unit="Hz"/></controlVariable></component>'
        "</controlVariable></controlVariable>"
        for kind, value in (("LOW_PASS", 150), ("HIGH_PASS", 0.05), ("NOTCH", 50))
    )
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<id root="2.25.1"/><code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
        '<effectiveTime><low value="20261124093015"/><high value="20261124093025"/></effectiveTime>'
        "<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>"
        f'<id extension="{patient_id}" root="2.25.2"/><subjectDemographicPerson>'
        f"<name><family>{family}</family><given>{given}</given></name>"
        '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
        '<birthTime value="19750607"/></subjectDemographicPerson></trialSubject></subject>'
        "</subjectAssignment></componentOf></timepointEvent></componentOf>"
        '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
        '<author><seriesAuthor><manufacturedSeriesDevice><id extension="DEV-7"/>'
        "<manufacturerModelName>CardioX 12</manufacturerModelName></manufacturedSeriesDevice>"
        "<manufacturerOrganization><name>Synthetic Devices</name></manufacturerOrganization>"
        "</seriesAuthor></author>"
        + filters
        + sequence_set(leads)
        + derived
        + "</series></component></AnnotatedECG>"
    )
    return document.encode(encoding)


def write_csv(
    leads: dict[str, np.ndarray],
    *,
    scale_uv: float = 5.0,
    units: str = "uV",
    patient_name: str = "张^伟",
    patient_id: str = "C0001",
    rate: int = 500,
    encoding: str = "utf-8",
    time_column: bool = False,
    extra_lines: tuple[str, ...] = (),
) -> bytes:
    factor = 1000.0 if units == "mV" else 1.0
    lines = [
        f"# patient_id: {patient_id}",
        f"# patient_name: {patient_name}",
        "# birth_date: 1980-02-03",
        "# sex: M",
        f"# sampling_rate: {rate}",
        f"# units: {units}",
        "# acquired: 2026-11-24T10:00:00+08:00",
        "# manufacturer: Synthetic Devices",
        *extra_lines,
        ",".join((("time",) if time_column else ()) + tuple(leads)),
    ]
    table = np.stack([values * scale_uv / factor for values in leads.values()], axis=1)
    for row_number, row in enumerate(table):
        cells = [f"{value:.6g}" for value in row]
        if time_column:
            cells.insert(0, f"{row_number / rate:.4f}")
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode(encoding)


def write_wfdb(
    folder: Path,
    leads: dict[str, np.ndarray],
    *,
    record_name: str = "rec01",
    gain: float = 200.0,
    baseline: int = 0,
    rate: int = 500,
    comments: tuple[str, ...] = (
        "patient_id: W0001",
        "patient_name: 陈^静",
        "sex: F",
        "birth_date: 19900101",
    ),
    comment_encoding: str = "utf-8",
) -> Path:
    """A format-16 record written by wfdb, with ``# key: value`` lines appended to its header."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    names = list(leads)
    digital = np.stack([leads[name] for name in names], axis=1).astype(np.int64)
    wfdb.wrsamp(
        record_name,
        fs=rate,
        units=["mV"] * len(names),
        sig_name=names,
        d_signal=digital,
        fmt=["16"] * len(names),
        adc_gain=[gain] * len(names),
        baseline=[baseline] * len(names),
        write_dir=str(folder),
    )
    header = folder / f"{record_name}.hea"
    with header.open("ab") as out:
        for line in comments:
            out.write(f"# {line}\n".encode(comment_encoding))
    return header
