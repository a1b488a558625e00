"""HL7 Annotated ECG (HL7 v3 ``AnnotatedECG``, ANSI/HL7 V3 ECG R1-2004), read with ElementTree.

(The ``aecg`` package on PyPI needs Python 3.12; the document is small
enough to read directly.) Followed, in namespace ``urn:hl7-org:v3``:

- ``effectiveTime/low@value``: acquisition time (HL7 TS, ``YYYYMMDDHHMMSS[.f][±ZZZZ]``);
- ``.../trialSubject/id@extension`` (else ``@root``): patient ID;
  ``subjectDemographicPerson/name`` (``family``/``given`` parts or plain
  text), ``administrativeGenderCode@code``, ``birthTime@value``;
- ``component/series`` coded ``RHYTHM`` (the rhythm; exactly one), and its
  ``derivation/derivedSeries`` coded ``REPRESENTATIVE_BEAT`` (median beats);
- in each, ``component/sequenceSet/component/sequence``: one coded
  ``TIME_ABSOLUTE`` or ``TIME_RELATIVE`` whose ``value/increment`` is the
  sampling interval (``s`` or ``ms``), and one per lead coded
  ``MDC_ECG_LEAD_*`` whose ``SLIST_PQ`` value is ``origin + scale × digits``
  (``uV``, ``mV`` or ``V``);
- ``controlVariable`` filters ``MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS``,
  ``..._HIGH_PASS``, ``..._NOTCH`` with their ``..._CUTOFF_FREQ`` in Hz;
- ``manufacturedSeriesDevice`` model name and ID, ``manufacturerOrganization/name``.

The digits are kept as integer counts with ``scale`` as the sensitivity
and ``origin`` as the baseline. DTDs and entity declarations are refused
(defusedxml). XML in a character set expat does not read (GB18030, GBK) is
transcoded to UTF-8 first, as its declaration says.
"""

from __future__ import annotations

import codecs
import re
from datetime import date, datetime, timedelta, timezone
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from device_adapters.ecg.errors import EcgImportError, UnknownEcgFormatError, UnsupportedEcgError
from device_adapters.ecg.leads import canonical_lead_name
from device_adapters.ecg.record import Device, EcgFormat, EcgRecord, Filters, Lead, Patient, WaveformGroup

__all__ = ["read_hl7_aecg"]

_NS = "{urn:hl7-org:v3}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_TO_UV = {"uv": 1.0, "µv": 1.0, "mv": 1000.0, "v": 1_000_000.0}
_TO_SECONDS = {"s": 1.0, "ms": 0.001, "us": 0.000001}
_DECLARATION = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*)([\"'])([A-Za-z0-9._-]+)\2")
_EXPAT_CODECS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "ascii", "iso8859-1"})
_SEX = {"M": "M", "F": "F"}
_FILTERS = {
    "MDC_ECG_CTL_VBL_ATTR_FILTER_HIGH_PASS": "low_hz",
    "MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS": "high_hz",
    "MDC_ECG_CTL_VBL_ATTR_FILTER_NOTCH": "notch_hz",
}


def _utf8(data: bytes) -> bytes:
    """The document in a character set expat reads, with its declaration changed to match."""
    match = _DECLARATION.match(data)
    if match is None:
        return data
    try:
        codec = codecs.lookup(match[3].decode("ascii")).name
    except LookupError:
        raise EcgImportError(
            f"the XML declares character set {match[3].decode('ascii')!r}, unknown"
        ) from None
    if codec in _EXPAT_CODECS:
        return data
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        raise EcgImportError(f"the XML is not valid {match[3].decode('ascii')} as it declares") from None
    return _DECLARATION.sub(lambda m: m[1] + m[2] + b"UTF-8" + m[2], text.encode("utf-8"), count=1)


def _parse(data: bytes) -> Element:
    try:
        root = fromstring(_utf8(data))
    except ParseError as exc:
        raise EcgImportError(f"malformed XML: {exc}") from None
    except DefusedXmlException as exc:
        raise EcgImportError(
            f"XML with a DTD or entity declarations is refused ({type(exc).__name__})"
        ) from None
    if root.tag != f"{_NS}AnnotatedECG":
        raise UnknownEcgFormatError(
            f"the XML document is {root.tag.removeprefix(_NS)!r}, not an HL7 aECG "
            "(AnnotatedECG in urn:hl7-org:v3)"
        )
    return root


def _code(element: Element) -> str:
    code = element.find(f"{_NS}code")
    return "" if code is None else code.get("code", "")


def _timestamp(value: str, what: str) -> datetime | None:
    match = re.fullmatch(
        r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?", value.strip()
    )
    if match is None:
        if not value.strip():
            return None
        raise EcgImportError(f"the aECG {what} {value.strip()[:30]!r} is not an HL7 timestamp")
    year, month, day, hour, minute, second = (int(part) if part else None for part in match.groups()[:6])
    fraction, zone = match[7], match[8]
    tzinfo = None
    if zone:
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        tzinfo = timezone(timedelta(minutes=-minutes if zone[0] == "-" else minutes))
    try:
        return datetime(
            year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0,
            int(float(fraction) * 1_000_000) if fraction else 0, tzinfo=tzinfo,
        )  # fmt: skip
    except ValueError:
        raise EcgImportError(f"the aECG {what} {value.strip()[:30]!r} is not a valid date") from None


def _patient(root: Element) -> Patient:
    subject = root.find(f".//{_NS}trialSubject")
    if subject is None:
        raise EcgImportError("the aECG has no trialSubject, so no patient ID")
    identifier = subject.find(f"{_NS}id")
    patient_id = "" if identifier is None else identifier.get("extension") or identifier.get("root", "")
    person = subject.find(f"{_NS}subjectDemographicPerson")
    family = given = ""
    birth: date | None = None
    sex = ""
    if person is not None:
        name = person.find(f"{_NS}name")
        if name is not None:
            family = " ".join((part.text or "").strip() for part in name.findall(f"{_NS}family"))
            given = " ".join((part.text or "").strip() for part in name.findall(f"{_NS}given"))
            if not family and not given:
                family = (name.text or "").strip()
        gender = person.find(f"{_NS}administrativeGenderCode")
        sex = _SEX.get(gender.get("code", "") if gender is not None else "", "")
        birth_time = person.find(f"{_NS}birthTime")
        if birth_time is not None and birth_time.get("value"):
            stamp = _timestamp(birth_time.get("value", ""), "birth time")
            birth = stamp.date() if stamp else None
    return Patient(
        patient_id=patient_id.strip(), family_name=family, given_name=given, birth_date=birth, sex=sex
    )


def _number(element: Element | None, attribute: str, what: str) -> float:
    if element is None or element.get(attribute) is None:
        raise EcgImportError(f"the aECG {what} is missing")
    try:
        return float(element.get(attribute, ""))
    except ValueError:
        raise EcgImportError(f"the aECG {what} {element.get(attribute, '')[:20]!r} is not a number") from None


def _microvolts(element: Element | None, what: str) -> float:
    value = _number(element, "value", what)
    unit = (element.get("unit", "uV") if element is not None else "uV").strip().lower()
    factor = _TO_UV.get(unit)
    if factor is None:
        raise UnsupportedEcgError(f"the aECG {what} is in {unit!r}; uV, mV and V are supported")
    return value * factor


def _group(sequence_set: Element, label: str, filters: Filters, derived: bool) -> WaveformGroup:
    interval: float | None = None
    leads: list[Lead] = []
    for sequence in sequence_set.iterfind(f"{_NS}component/{_NS}sequence"):
        code = _code(sequence)
        value = sequence.find(f"{_NS}value")
        if code in ("TIME_ABSOLUTE", "TIME_RELATIVE"):
            increment = value.find(f"{_NS}increment") if value is not None else None
            unit = increment.get("unit", "s").strip().lower() if increment is not None else "s"
            if unit not in _TO_SECONDS:
                raise UnsupportedEcgError(
                    f"the aECG sampling increment is in {unit!r}; s or ms are supported"
                )
            interval = _number(increment, "value", "sampling increment") * _TO_SECONDS[unit]
            continue
        if value is None:
            continue
        name = canonical_lead_name(code)
        digits_element = value.find(f"{_NS}digits")
        text = digits_element.text if digits_element is not None else None
        try:
            digits = np.array((text or "").split(), dtype=np.int64)
        except ValueError:
            raise EcgImportError(f"the aECG digits of lead {name} are not all integers") from None
        scale = _microvolts(value.find(f"{_NS}scale"), f"scale of lead {name}")
        if scale <= 0:
            raise UnsupportedEcgError(
                f"the aECG scale of lead {name} is {scale}; only positive scales are supported"
            )
        origin = _microvolts(value.find(f"{_NS}origin"), f"origin of lead {name}")
        leads.append(Lead(name, digits, scale, origin))
    if interval is None or interval <= 0:
        raise EcgImportError(f"the aECG {label.lower()} sequence set has no time sequence with an increment")
    return WaveformGroup(label, 1.0 / interval, tuple(leads), derived=derived, filters=filters)


def _filters(series: Element) -> Filters:
    values: dict[str, float] = {}
    for variable in series.iterfind(f".//{_NS}controlVariable"):
        field = _FILTERS.get(_code(variable))
        if field is None:
            continue
        for inner in variable.iterfind(f".//{_NS}controlVariable"):
            if _code(inner) == "MDC_ECG_CTL_VBL_ATTR_FILTER_CUTOFF_FREQ":
                values[field] = _number(inner.find(f"{_NS}value"), "value", "filter cut-off")
    return Filters(**values)


def _device(root: Element) -> Device:
    def text(path: str) -> str:
        element = root.find(path)
        return (element.text or "").strip() if element is not None else ""

    serial = root.find(f".//{_NS}manufacturedSeriesDevice/{_NS}id")
    return Device(
        manufacturer=text(f".//{_NS}manufacturerOrganization/{_NS}name"),
        model=text(f".//{_NS}manufacturedSeriesDevice/{_NS}manufacturerModelName"),
        serial_number=(serial.get("extension", "") if serial is not None else "").strip(),
        software_version=text(f".//{_NS}manufacturedSeriesDevice/{_NS}softwareName"),
    )


def read_hl7_aecg(data: bytes) -> EcgRecord:
    """The rhythm (and median beats, if any) of an HL7 aECG document."""
    root = _parse(data)
    rhythms = [
        series for series in root.iterfind(f"{_NS}component/{_NS}series") if _code(series) in ("RHYTHM", "")
    ]
    if len(rhythms) != 1:
        raise UnsupportedEcgError(
            f"the aECG has {len(rhythms)} rhythm series; exactly one is supported"
            if rhythms
            else "the aECG has no rhythm series (component/series coded RHYTHM)"
        )
    series = rhythms[0]
    filters = _filters(series)
    sets = series.findall(f"{_NS}component/{_NS}sequenceSet")
    if len(sets) != 1:
        raise UnsupportedEcgError(
            f"the aECG rhythm series has {len(sets)} sequence sets; exactly one is supported"
        )
    groups = [_group(sets[0], "RHYTHM", filters, derived=False)]
    for derived in series.iterfind(f"{_NS}derivation/{_NS}derivedSeries"):
        if _code(derived) != "REPRESENTATIVE_BEAT":
            continue
        for sequence_set in derived.findall(f"{_NS}component/{_NS}sequenceSet")[:1]:
            groups.append(_group(sequence_set, "MEDIAN BEAT", filters, derived=True))
    low = root.find(f"{_NS}effectiveTime/{_NS}low")
    acquired = _timestamp(low.get("value", ""), "effectiveTime") if low is not None else None
    return EcgRecord(
        source_format=EcgFormat.HL7_AECG,
        patient=_patient(root),
        groups=tuple(groups),
        acquired_at=acquired,
        device=_device(root),
    )
