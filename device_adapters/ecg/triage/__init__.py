"""ECG triage: every stored 12-lead ECG measured and screened, a positive screen alerted.

``waveform.read_leads`` takes the twelve leads (mV) from the stored DICOM;
``measure.measure`` finds the beats (neurokit2) and measures rate, PR, QRS,
QT/QTc, frontal axis and ST levels on median beats; ``screen.screen``
applies the STEMI voltage criteria in contiguous leads and the urgent-rate
limits; ``worker.EcgTriage`` runs all of it off the ingest path, records a
row per ECG instance version and, on a positive screen, opens a critical
consult and publishes ``alert.critical``. Decision support only: every
finding needs physician confirmation (docs/devices.md).
"""

from device_adapters.ecg.triage.measure import ALGORITHM, EcgMeasurements, measure
from device_adapters.ecg.triage.screen import CONFIRMATION, ScreenResult, ScreenThresholds, screen
from device_adapters.ecg.triage.waveform import (
    ECG_SOP_CLASS_UIDS,
    EcgLeads,
    NotAnalysableError,
    PatientFacts,
    patient_of,
    read_leads,
)
from device_adapters.ecg.triage.worker import EcgTriage, thresholds_of

__all__ = [
    "ALGORITHM",
    "CONFIRMATION",
    "ECG_SOP_CLASS_UIDS",
    "EcgLeads",
    "EcgMeasurements",
    "EcgTriage",
    "NotAnalysableError",
    "PatientFacts",
    "ScreenResult",
    "ScreenThresholds",
    "measure",
    "patient_of",
    "read_leads",
    "screen",
    "thresholds_of",
]
