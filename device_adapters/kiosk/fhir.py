"""Kiosk observations and patients as FHIR R4 resources (JSON), coded in LOINC with UCUM units.

Vital signs follow the FHIR vital signs profile's codes (blood pressure as
the 85354-9 panel with systolic 8480-6 and diastolic 8462-4 components,
SpO2 as 59408-5 with 2708-6, temperature 8310-5, weight 29463-7, heart rate
8867-4); blood glucose is 15074-8 (moles/volume, since it is stored in
mmol/L whatever the kiosk reported); the urine dipstick is the 24357-6
panel with one component per pad ("by Test strip" codes). A value past an
alert threshold carries interpretation ``AA`` (critical abnormal) and the
reason as a note.

The patient is ``Patient/<patient key>`` (a random id); the resident ID
number appears only masked, under its own identifier system, so it cannot
be mistaken for the number.
"""

from __future__ import annotations

from typing import Any

from device_adapters.kiosk.units import CANONICAL
from teleconsult.consults.outputs.fhir import IDENTIFIER_BASE
from teleconsult.domain.observations import KioskPatient, Observation, ObservationKind

__all__ = ["KIOSK_PATIENT_PREFIX", "observation_resource", "patient_resource", "searchset"]

_LOINC = "http://loinc.org"
_UCUM = "http://unitsofmeasure.org"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
KIOSK_PATIENT_PREFIX = "Patient/"

_CODES: dict[ObservationKind, list[tuple[str, str]]] = {
    ObservationKind.BLOOD_PRESSURE: [("85354-9", "Blood pressure panel with all children optional")],
    ObservationKind.HEART_RATE: [("8867-4", "Heart rate")],
    ObservationKind.GLUCOSE: [("15074-8", "Glucose [Moles/volume] in Blood")],
    ObservationKind.TEMPERATURE: [("8310-5", "Body temperature")],
    ObservationKind.SPO2: [
        ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ("2708-6", "Oxygen saturation in Arterial blood"),
    ],
    ObservationKind.WEIGHT: [("29463-7", "Body weight")],
    ObservationKind.URINALYSIS: [("24357-6", "Urinalysis macro (dipstick) panel - Urine")],
    ObservationKind.ECG: [("11524-6", "EKG study")],
}
_TEXT = {
    ObservationKind.BLOOD_PRESSURE: "血压 Blood pressure",
    ObservationKind.HEART_RATE: "心率 Heart rate",
    ObservationKind.GLUCOSE: "血糖 Blood glucose",
    ObservationKind.TEMPERATURE: "体温 Body temperature",
    ObservationKind.SPO2: "血氧饱和度 SpO2",
    ObservationKind.WEIGHT: "体重 Body weight",
    ObservationKind.URINALYSIS: "尿常规 Urine dipstick",
    ObservationKind.ECG: "心电图 ECG",
}
_BP_COMPONENTS = {
    "systolic": ("8480-6", "Systolic blood pressure"),
    "diastolic": ("8462-4", "Diastolic blood pressure"),
}
_URINE_PADS = {
    "glucose": ("25428-4", "Glucose [Presence] in Urine by Test strip"),
    "protein": ("20454-5", "Protein [Presence] in Urine by Test strip"),
    "ketones": ("2514-8", "Ketones [Presence] in Urine by Test strip"),
    "blood": ("5794-3", "Hemoglobin [Presence] in Urine by Test strip"),
    "bilirubin": ("5770-3", "Bilirubin.total [Presence] in Urine by Test strip"),
    "leukocytes": ("5799-2", "Leukocyte esterase [Presence] in Urine by Test strip"),
    "urobilinogen": ("5818-0", "Urobilinogen [Presence] in Urine by Test strip"),
    "nitrite": ("5802-4", "Nitrite [Presence] in Urine by Test strip"),
    "ph": ("5803-2", "pH of Urine by Test strip"),
    "specific_gravity": ("5811-5", "Specific gravity of Urine by Test strip"),
}
_LABORATORY = frozenset({ObservationKind.GLUCOSE, ObservationKind.URINALYSIS})


def _concept(codes: list[tuple[str, str]], text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": _LOINC, "code": c, "display": d} for c, d in codes]}
    if text:
        concept["text"] = text
    return concept


def _quantity(value: float, kind: ObservationKind) -> dict[str, Any]:
    unit = CANONICAL[kind]
    return {"value": value, "unit": unit.display, "system": _UCUM, "code": unit.ucum}


def _category(kind: ObservationKind) -> dict[str, Any]:
    code, display = (
        ("laboratory", "Laboratory")
        if kind in _LABORATORY
        else ("procedure", "Procedure")
        if kind is ObservationKind.ECG
        else ("vital-signs", "Vital Signs")
    )
    return {"coding": [{"system": _CATEGORY, "code": code, "display": display}]}


def _time(value: Any) -> str:
    return str(value.isoformat(timespec="seconds"))


def _value(observation: Observation) -> dict[str, Any]:
    kind, values = observation.kind, observation.values
    if kind is ObservationKind.BLOOD_PRESSURE:
        return {
            "component": [
                {
                    "code": _concept([_BP_COMPONENTS[name]]),
                    "valueQuantity": _quantity(float(values[name]), kind),
                }
                for name in ("systolic", "diastolic")
            ]
        }
    if kind is ObservationKind.URINALYSIS:
        components = []
        for name, value in values.items():
            component: dict[str, Any] = {"code": _concept([_URINE_PADS[name]])}
            if isinstance(value, str):
                component["valueString"] = value
            else:
                component["valueQuantity"] = {"value": value, "system": _UCUM, "code": "1"}
            components.append(component)
        return {"component": components}
    if kind is ObservationKind.ECG:
        return {"valueString": f"ECG stored as DICOM ({values.get('source_format', '')})"}
    return {"valueQuantity": _quantity(float(values["value"]), kind)}


def observation_resource(observation: Observation) -> dict[str, Any]:
    """The Observation of one stored kiosk measurement."""
    kind = observation.kind
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation.observation_id,
        "meta": {"lastUpdated": _time(observation.received_at)},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{observation.observation_id}"}],
        "status": "final",
        "category": [_category(kind)],
        "code": _concept(_CODES[kind], _TEXT[kind]),
        "subject": {"reference": f"{KIOSK_PATIENT_PREFIX}{observation.patient_key}"},
        "effectiveDateTime": _time(observation.measured_at),
        "issued": _time(observation.received_at),
        "performer": [
            {
                "identifier": {
                    "system": f"{IDENTIFIER_BASE}/organisation",
                    "value": observation.organisation,
                },
                "display": observation.organisation,
            }
        ],
        "device": {
            "identifier": {"system": f"{IDENTIFIER_BASE}/kiosk", "value": observation.device_id},
            "display": f"health kiosk {observation.device_id}",
        },
        **_value(observation),
    }
    if observation.context:
        resource["note"] = [{"text": f"glucose sample: {observation.context}"}]
    if observation.alerts:
        resource["interpretation"] = [
            {"coding": [{"system": _INTERPRETATION, "code": "AA", "display": "Critical abnormal"}]}
        ]
        resource.setdefault("note", []).extend({"text": f"alert: {reason}"} for reason in observation.alerts)
    if observation.study_instance_uid:
        resource["derivedFrom"] = [
            {
                "type": "ImagingStudy",
                "identifier": {
                    "system": "urn:dicom:uid",
                    "value": f"urn:oid:{observation.study_instance_uid}",
                },
            }
        ]
    return resource


def patient_resource(patient: KioskPatient) -> dict[str, Any]:
    """The Patient a kiosk created: masked ID, name as on the card, birth date and sex from the number."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient.patient_key,
        "meta": {"lastUpdated": _time(patient.created_at)},
        "identifier": [
            {
                "use": "secondary",
                "type": {"text": "居民身份证号 (masked)"},
                "system": f"{IDENTIFIER_BASE}/resident-id-masked",
                "value": patient.resident_id_masked,
            }
        ],
        "gender": patient.sex,
        "birthDate": patient.birth_date.isoformat(),
        "managingOrganization": {
            "identifier": {"system": f"{IDENTIFIER_BASE}/organisation", "value": patient.organisation},
            "display": patient.organisation,
        },
    }
    if patient.name:
        resource["name"] = [{"text": patient.name}]
    # No link to the patient index's Patient/<sha256(issuer|PatientID)>: when the PatientID is the
    # resident ID number, that unsalted hash gives the number back in seconds (the masked form
    # already tells region and last digits).
    return resource


def searchset(resources: list[dict[str, Any]], self_url: str, base_url: str) -> dict[str, Any]:
    """A search result Bundle of any resources (``fullUrl`` from each one's type and id)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }
