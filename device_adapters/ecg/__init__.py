"""ECG carts that do not speak DICOM: SCP-ECG, HL7 aECG, WFDB and CSV files become DICOM ECG waveforms.

Readers (one module per file family) produce one ``EcgRecord``;
``to_dicom.build_ecg_waveform`` turns it into a 12-Lead or General ECG
Waveform instance; ``importer.EcgImporter`` stores it through the store
API; ``inbox.EcgInbox`` watches the drop folder and the HTTP upload lives
in ``teleconsult/api/routes/devices.py``. Formats, layouts and rules:
docs/devices.md.
"""

from device_adapters.ecg.aecg import read_hl7_aecg
from device_adapters.ecg.csv_table import read_csv
from device_adapters.ecg.errors import (
    EcgImportError,
    EcgRequestError,
    EcgTooLargeError,
    UnknownEcgFormatError,
    UnsupportedEcgError,
)
from device_adapters.ecg.formats import detect_format, read_ecg
from device_adapters.ecg.record import EcgFormat, EcgRecord, Lead, Patient, WaveformGroup
from device_adapters.ecg.scp import read_scp_ecg
from device_adapters.ecg.to_dicom import build_ecg_waveform
from device_adapters.ecg.wfdb_record import read_wfdb, read_wfdb_files

__all__ = [
    "EcgFormat",
    "EcgImportError",
    "EcgRecord",
    "EcgRequestError",
    "EcgTooLargeError",
    "Lead",
    "Patient",
    "UnknownEcgFormatError",
    "UnsupportedEcgError",
    "WaveformGroup",
    "build_ecg_waveform",
    "detect_format",
    "read_csv",
    "read_ecg",
    "read_hl7_aecg",
    "read_scp_ecg",
    "read_wfdb",
    "read_wfdb_files",
]
