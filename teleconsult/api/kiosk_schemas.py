"""Request and response bodies of the kiosk routes (``/api/kiosk``).

Resident ID numbers appear only masked (``resident_id_masked``); the patient
is named by an opaque ``patient_key`` in URLs, events and FHIR.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from teleconsult.domain.observations import KioskPatient, Observation

__all__ = ["KioskIntakePublic", "KioskObservationPublic", "KioskPatientPublic", "KioskPatientRecordPublic"]


class KioskPatientPublic(BaseModel):
    patient_key: str = Field(description="Opaque id: the FHIR Patient id and the key of the URLs below")
    resident_id_masked: str = Field(description="e.g. 110105********123X")
    name: str | None
    birth_date: date
    sex: str = Field(description="male or female (from the ID number)")
    organisation: str = Field(description="Where the villager was first measured")
    linked_issuer_of_patient_id: str | None = Field(
        description="Organisation of the patient index entry with this ID number as PatientID, if one exists"
    )

    @classmethod
    def of(cls, patient: KioskPatient) -> KioskPatientPublic:
        return cls(
            patient_key=patient.patient_key,
            resident_id_masked=patient.resident_id_masked,
            name=patient.name,
            birth_date=patient.birth_date,
            sex=patient.sex,
            organisation=patient.organisation,
            linked_issuer_of_patient_id=patient.linked_patient[1] if patient.linked_patient else None,
        )


class KioskObservationPublic(BaseModel):
    id: str = Field(description="Observation id (also the FHIR Observation id)")
    type: str = Field(
        description="blood_pressure, heart_rate, glucose, temperature, spo2, weight, urinalysis, ecg"
    )
    measured_at: datetime
    received_at: datetime
    values: dict[str, float | str] = Field(description="In the canonical unit: systolic/diastolic, or value")
    unit: str = Field(description="UCUM: mm[Hg], /min, mmol/L, Cel, %, kg; empty for urinalysis and ECG")
    context: str | None = Field(description="Glucose: fasting, random or postprandial")
    reported: dict[str, Any] = Field(description="The measurement as the kiosk sent it")
    alerts: list[str] = Field(description="Thresholds this value crossed (alert.critical was raised)")
    organisation: str
    device_id: str
    channel: str = Field(description="http or mqtt")
    sop_instance_uid: str | None = Field(description="ECG: the stored DICOM waveform")
    study_instance_uid: str | None
    patient_key: str

    @classmethod
    def of(cls, observation: Observation) -> KioskObservationPublic:
        return cls(
            id=observation.observation_id,
            type=observation.kind.value,
            measured_at=observation.measured_at,
            received_at=observation.received_at,
            values=dict(observation.values),
            unit=observation.unit,
            context=observation.context,
            reported=dict(observation.reported),
            alerts=list(observation.alerts),
            organisation=observation.organisation,
            device_id=observation.device_id,
            channel=observation.channel.value,
            sop_instance_uid=observation.sop_instance_uid,
            study_instance_uid=observation.study_instance_uid,
            patient_key=observation.patient_key,
        )


class _StoredObservation(BaseModel):
    id: str
    type: str
    outcome: str = Field(description="stored; duplicate if this message was received before")
    alerts: list[str]


class KioskIntakePublic(BaseModel):
    patient: KioskPatientPublic
    observations: list[_StoredObservation]
    alert_event_id: str | None = Field(description="The alert.critical event raised, if any")


class KioskPatientRecordPublic(BaseModel):
    patient: KioskPatientPublic
    observations: list[KioskObservationPublic] = Field(
        description="Newest first, those in the caller's scope"
    )
