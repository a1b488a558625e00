"""Lead names, and the codes that identify them in SCP-ECG and DICOM.

SCP-ECG Section 3 names each lead by a number (EN 1064:2005 / ISO
11073-91064 lead identification table); DICOM CID 3001 "ECG Leads" reuses
that table as coding scheme ``SCPECG`` with code values ``5.6.3-9-<number>``.
One table therefore serves both the SCP-ECG reader and the DICOM writer, and
a lead another format names in text (``aVR``, ``AVR``, ``MDC_ECG_LEAD_AVR``)
is mapped onto it by ``canonical_lead_name``. A lead with a name outside the
table keeps its name as the channel label and is coded "Unspecified lead".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "STANDARD_12_LEADS",
    "LeadCode",
    "canonical_lead_name",
    "lead_code",
    "scp_lead_name",
]

SCPECG_SCHEME = "SCPECG"
SCPECG_SCHEME_VERSION = "1.3"

STANDARD_12_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# SCP-ECG lead identification numbers 1-30 and 61-78; 31-60 are the calibration
# signals of leads 1-30 and 79-85 those of 66-72.
_BASE = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
    19: "CC5", 20: "CM5", 21: "LA", 22: "RA", 23: "LL", 24: "fI", 25: "fE", 26: "fC", 27: "fA",
    28: "fM", 29: "fF", 30: "fH", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR",
    66: "V8", 67: "V9", 68: "V8R", 69: "V9R", 70: "D", 71: "A", 72: "J", 73: "Defib",
    74: "ExtPace", 75: "A1", 76: "A2", 77: "A3", 78: "A4",
}  # fmt: skip
_SCP_NAMES: dict[int, str] = {
    **_BASE,
    **{number + 30: f"{_BASE[number]}-cal" for number in range(1, 31)},
    **{number + 13: f"{_BASE[number]}-cal" for number in range(66, 73)},
}
_NUMBER_OF = {name: number for number, name in _SCP_NAMES.items()}
_UPPER = {name.upper(): name for name in _NUMBER_OF}
# Other spellings carts and files use for the limb leads.
_ALIASES = {"D1": "I", "D2": "II", "D3": "III", "DI": "I", "DII": "II", "DIII": "III", "AVRNEG": "-aVR"}
_PREFIX = re.compile(r"^(MDC_ECG_LEAD_|LEAD[ _-]?)", re.IGNORECASE)

# CID 3001 code meanings of the standard leads (as DICOM PS3.16 words them).
_MEANINGS = {"I": "Lead I (Einthoven)"}


@dataclass(frozen=True, slots=True)
class LeadCode:
    """A CID 3001 code (SCPECG scheme) for a channel source."""

    value: str
    meaning: str
    scheme: str = SCPECG_SCHEME
    version: str = SCPECG_SCHEME_VERSION


def scp_lead_name(number: int) -> str | None:
    """The lead an SCP-ECG lead identification number names; None if the table has no such number."""
    return _SCP_NAMES.get(number)


def canonical_lead_name(name: str) -> str:
    """``name`` spelt as the lead table spells it (``AVR`` -> ``aVR``); unknown names unchanged."""
    stripped = name.strip()
    key = _PREFIX.sub("", stripped).replace(" ", "").upper()
    key = _ALIASES.get(key, key).upper()
    return _UPPER.get(key, stripped)


def lead_code(name: str) -> LeadCode:
    """The CID 3001 code of a lead; "Unspecified lead" for a name outside the table."""
    number = _NUMBER_OF.get(name)
    if number is None:
        return LeadCode("5.6.3-9-0", "Unspecified lead")
    return LeadCode(f"5.6.3-9-{number}", _MEANINGS.get(name, f"Lead {name}"))
