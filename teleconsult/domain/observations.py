"""Vital signs and point-of-care results measured by village health kiosks, and their patients.

Pure model, no I/O: what the kiosk intake (``device_adapters/kiosk``) hands to
storage, and what storage hands to the API and FHIR. Values are kept in one
canonical unit per kind (the unit a clinician reads and the FHIR vital
signs profile asks for), next to what the device reported. A patient is
known by an opaque key; the resident ID number only ever appears masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

__all__ = ["Channel", "KioskPatient", "NewObservation", "Observation", "ObservationKind"]


class ObservationKind(StrEnum):
    BLOOD_PRESSURE = "blood_pressure"
    HEART_RATE = "heart_rate"
    GLUCOSE = "glucose"
    TEMPERATURE = "temperature"
    SPO2 = "spo2"
    WEIGHT = "weight"
    URINALYSIS = "urinalysis"
    ECG = "ecg"


class Channel(StrEnum):
    """How a measurement reached teleconsult."""

    HTTP = "http"
    MQTT = "mqtt"


@dataclass(frozen=True, slots=True)
class KioskPatient:
    """A villager measured by a kiosk, matched by the keyed hash of their resident ID number.

    ``linked_patient`` is the (PatientID, issuer) of the patient index entry
    with that ID in the measuring organisation's scope, once one exists.
    """

    patient_key: str
    resident_id_masked: str
    organisation: str  # where they were first measured
    name: str | None
    birth_date: date
    sex: str  # male | female (from the ID number)
    created_at: datetime
    linked_patient: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class NewObservation:
    """One measurement to store, already checked and in its canonical unit."""

    kind: ObservationKind
    values: Mapping[str, float | str]  # component name -> value (one "value" for single measurements)
    unit: str  # UCUM of the numeric values; "" for urinalysis and ECG
    reported: Mapping[str, Any]  # the measurement as the device sent it
    alerts: tuple[str, ...] = ()  # why it crosses an alert threshold
    context: str | None = None  # glucose: fasting, random, postprandial
    sop_instance_uid: str | None = None  # ECG: the stored DICOM waveform
    study_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """A stored measurement. Rows are append-only: a correction is a new measurement."""

    observation_id: str
    patient_key: str
    organisation: str
    device_id: str
    channel: Channel
    kind: ObservationKind
    measured_at: datetime
    received_at: datetime
    values: Mapping[str, float | str]
    unit: str
    reported: Mapping[str, Any] = field(default_factory=dict)
    alerts: tuple[str, ...] = ()
    context: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
