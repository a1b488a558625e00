"""POST /api/kiosk/measurements -> stored -> read back over /api/kiosk and FHIR, on SQLite and PostgreSQL.

Also: device authentication, refusals with problem+json, duplicates and
conflicts, linking to the patient index, the ECG through the ECG importer,
organisation scope (another township gets 404), audit rows, and the full
resident ID number never appearing in an answer or a log line.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from device_adapters.kiosk.devices import KioskRegistry
from teleconsult.storage.tables import AuditRecord, KioskObservationRow, KioskPatientRow
from tests.conftest import ApiClient
from tests.device_adapters.kiosk.conftest import ID_DIGIT, ID_X, message, post
from tests.device_adapters.writers import synthetic_leads, write_csv
from tests.factories import encode, make_image


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def _no_full_id(*texts: str) -> None:
    for text in texts:
        assert ID_DIGIT not in text
        assert ID_X not in text
        assert ID_DIGIT[6:14] + ID_DIGIT[14:17] not in text  # nor its birth date and sequence together


def _audit(api: ApiClient, action: str) -> list[Any]:
    with api.store.index.engine.connect() as conn:
        return list(
            conn.execute(
                select(AuditRecord.__table__).where(AuditRecord.action == action).order_by(AuditRecord.pk)
            )
        )


def test_measurements_are_stored_and_read_back_masked(
    api: ApiClient, kiosk_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = post(api, message(), kiosk_headers)
    assert response.status_code == 201, response.text
    body = response.json()
    patient = body["patient"]
    assert patient["resident_id_masked"] == "110105********" + ID_DIGIT[-4:]
    assert patient["name"] == "王小明"
    assert (patient["birth_date"], patient["sex"], patient["organisation"]) == (
        "1962-03-04",
        "male",
        "VILLAGE21",
    )
    assert [o["type"] for o in body["observations"]] == [
        "blood_pressure", "glucose", "temperature", "spo2", "weight", "urinalysis",
    ]  # fmt: skip
    assert {o["outcome"] for o in body["observations"]} == {"stored"}
    assert body["alert_event_id"] is None
    key = patient["patient_key"]

    record = api.client.get(  # type: ignore[attr-defined]
        f"/api/kiosk/patients/{key}/observations", headers=api.headers("village")
    )
    assert record.status_code == 200, record.text
    stored = {o["type"]: o for o in record.json()["observations"]}
    assert stored["blood_pressure"]["values"] == {"systolic": 132, "diastolic": 84}
    assert stored["blood_pressure"]["unit"] == "mm[Hg]"
    assert stored["glucose"]["context"] == "fasting"
    assert stored["urinalysis"]["values"] == {
        "glucose": "negative",
        "protein": "trace",
        "nitrite": "negative",
        "ph": 6,
    }
    assert stored["spo2"]["channel"] == "http"
    assert stored["spo2"]["device_id"] == "KIOSK-V21"

    # FHIR: each one a valid R4 Observation, found by subject and by patient
    fhir_texts = []
    for observation in record.json()["observations"]:
        read = api.client.get(f"/fhir/Observation/{observation['id']}", headers=api.headers("specialist"))  # type: ignore[attr-defined]
        assert read.status_code == 200, read.text
        assert read.headers["content-type"].startswith("application/fhir+json")
        resource = Observation.model_validate(read.json())
        assert resource.subject.reference == f"Patient/{key}"
        fhir_texts.append(read.text)
    bp = Observation.model_validate(
        api.client.get(
            f"/fhir/Observation/{stored['blood_pressure']['id']}", headers=api.headers("sono2")
        ).json()  # type: ignore[attr-defined]
    )
    assert bp.code.coding[0].code == "85354-9"
    assert {c.code.coding[0].code: c.valueQuantity.value for c in bp.component} == {
        "8480-6": 132,
        "8462-4": 84,
    }
    assert bp.component[0].valueQuantity.code == "mm[Hg]"
    spo2 = api.client.get(f"/fhir/Observation/{stored['spo2']['id']}", headers=api.headers("sono2")).json()  # type: ignore[attr-defined]
    assert [c["code"] for c in spo2["code"]["coding"]] == ["59408-5", "2708-6"]
    for query in (f"subject=Patient/{key}", f"patient={key}"):
        search = api.client.get(f"/fhir/Observation?{query}", headers=api.headers("village"))  # type: ignore[attr-defined]
        bundle = Bundle.model_validate(search.json())
        assert bundle.total == 6
        fhir_texts.append(search.text)
    person = api.client.get(f"/fhir/Patient/{key}", headers=api.headers("village"))  # type: ignore[attr-defined]
    fhir_patient = Patient.model_validate(person.json())
    assert fhir_patient.identifier[0].value == patient["resident_id_masked"]
    assert str(fhir_patient.birthDate) == "1962-03-04"
    assert fhir_patient.gender == "male"
    found = Bundle.model_validate(
        api.client.get(f"/fhir/Patient?_id={key}", headers=api.headers("village")).json()  # type: ignore[attr-defined]
    )
    assert found.total == 1

    _no_full_id(response.text, record.text, person.text, *fhir_texts, caplog.text)
    with api.store.index.engine.connect() as conn:
        row = conn.execute(select(KioskPatientRow.__table__)).one()
    assert ID_DIGIT not in " ".join(str(value) for value in row)  # encrypted, hashed and masked only
    assert len(_audit(api, "observation.store")) == 1
    assert _audit(api, "observation.store")[0].actor == "kiosk:KIOSK-V21"
    assert _audit(api, "observation.store")[0].patient_id == key
    assert len(_audit(api, "observation.read")) == 9  # the record, six FHIR reads, then two again
    assert len(_audit(api, "patient.read")) == 1


def test_repeated_message_is_a_duplicate_and_a_changed_one_a_conflict(
    api: ApiClient, kiosk_headers: dict[str, str]
) -> None:
    body = message()
    first = post(api, body, kiosk_headers).json()
    again = post(api, body, kiosk_headers)
    assert again.status_code == 201
    assert [o["id"] for o in again.json()["observations"]] == [o["id"] for o in first["observations"]]
    assert {o["outcome"] for o in again.json()["observations"]} == {"duplicate"}
    changed = {**body, "measurements": [{"type": "spo2", "value": 93, "unit": "%"}]}
    conflict = post(api, changed, kiosk_headers)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "conflict"
    with api.store.index.engine.connect() as conn:
        assert len(conn.execute(select(KioskObservationRow.__table__)).all()) == 6


def test_a_second_visit_finds_the_same_patient(api: ApiClient, kiosk_headers: dict[str, str]) -> None:
    first = post(api, message(), kiosk_headers).json()
    later = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    second = post(api, message(measured_at=later, name="王晓明"), kiosk_headers).json()
    assert second["patient"]["patient_key"] == first["patient"]["patient_key"]
    assert second["patient"]["name"] == "王晓明"  # the newest name read from the card
    other = post(api, message(number=ID_X, measured_at=later - timedelta(minutes=1)), kiosk_headers).json()
    assert other["patient"]["patient_key"] != first["patient"]["patient_key"]
    assert other["patient"]["resident_id_masked"] == "110105********002X"


def test_kiosk_patient_is_linked_to_the_patient_index_in_scope(
    api: ApiClient, kiosk_headers: dict[str, str]
) -> None:
    api.store.store_instance(
        encode(make_image(patient_id=ID_DIGIT)),
        ExplicitVRLittleEndian,
        calling_ae_title="TOWNUS",
        source_organisation="VILLAGE21",
    )
    api.store.store_instance(
        encode(make_image(patient_id=ID_X)),
        ExplicitVRLittleEndian,
        calling_ae_title="TOWNUS",
        source_organisation="TOWN01",
    )
    linked = post(api, message(), kiosk_headers).json()["patient"]
    assert linked["linked_issuer_of_patient_id"] == "VILLAGE21"
    # TOWN01 is not in the village clinic's scope: no link to another township's patient
    later = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    apart = post(api, message(number=ID_X, measured_at=later), kiosk_headers).json()["patient"]
    assert apart["linked_issuer_of_patient_id"] is None


def test_an_ecg_goes_through_the_ecg_importer(api: ApiClient, kiosk_headers: dict[str, str]) -> None:
    csv = write_csv(synthetic_leads(seconds=2.0), patient_id=ID_DIGIT)
    ecg = {"files": [{"name": "kiosk.csv", "content_base64": base64.b64encode(csv).decode()}]}
    response = post(api, message(measurements=[], ecg=ecg), kiosk_headers)
    assert response.status_code == 201, response.text
    observation = response.json()["observations"][0]
    assert observation["type"] == "ecg"
    record = api.client.get(  # type: ignore[attr-defined]
        f"/api/kiosk/patients/{response.json()['patient']['patient_key']}/observations",
        headers=api.headers("sono2"),
    ).json()["observations"][0]
    assert record["values"] == {"source_format": "csv"}
    stored = api.store.read_instance(record["sop_instance_uid"])
    assert b"1.2.840.10008.5.1.4.1.1.9.1.1" in stored  # a 12-lead ECG waveform in the store
    fhir = api.client.get(f"/fhir/Observation/{observation['id']}", headers=api.headers("sono2")).json()  # type: ignore[attr-defined]
    Observation.model_validate(fhir)
    assert fhir["derivedFrom"][0]["identifier"]["value"] == f"urn:oid:{record['study_instance_uid']}"

    broken = {"files": [{"name": "kiosk.csv", "content_base64": base64.b64encode(b"not,an\necg").decode()}]}
    later = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    refused = post(api, message(measurements=[], ecg=broken, measured_at=later), kiosk_headers)
    assert refused.status_code == 422
    assert refused.json()["code"].startswith("ecg-")
    assert list((api.settings.quarantine_dir).rglob("kiosk.csv"))


def test_device_authentication(api: ApiClient, registry: KioskRegistry) -> None:
    body = message()
    missing = post(api, body, {})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    forged = post(
        api, body, {"Authorization": "Bearer KIOSK-V21.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    )
    assert forged.status_code == 401
    user = post(api, body, api.headers("village"))  # a user's token is not a kiosk's
    assert user.status_code == 401
    unknown = post(api, body, {"Authorization": "Bearer KIOSK-X.abc"})
    assert unknown.status_code == 403
    assert unknown.json()["code"] == "kiosk-device-unknown"
    other = post(api, body, {"Authorization": f"Bearer {registry.token('KIOSK-T01')}"})
    assert other.status_code == 403
    assert "names kiosk 'KIOSK-V21'" in other.json()["detail"]
    nowhere = post(
        api, message("KIOSK-NOWHERE"), {"Authorization": f"Bearer {registry.token('KIOSK-NOWHERE')}"}
    )
    assert nowhere.status_code == 403
    assert "does not exist" in nowhere.json()["detail"]
    with api.store.index.engine.connect() as conn:
        assert conn.execute(select(KioskObservationRow.__table__)).all() == []
    denied = [
        row for row in _audit(api, "access") + _audit(api, "observation.store") if row.outcome == "denied"
    ]
    assert len(denied) >= 5


def test_invalid_messages_get_problem_json_naming_the_field(
    api: ApiClient, kiosk_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    bad = message(measurements=[{"type": "blood_pressure", "systolic": 400, "diastolic": 80}])
    response = post(api, bad, kiosk_headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert errors[0]["field"] == "body.measurements.0.blood_pressure"
    assert "systolic 400 mmHg" in errors[0]["message"]
    wrong_check = post(api, message(number=ID_DIGIT[:-1] + "X"), kiosk_headers)
    assert wrong_check.status_code == 422
    assert wrong_check.json()["errors"][0]["field"] == "body.resident_id"
    future = post(api, message(measured_at=datetime.now(UTC) + timedelta(hours=2)), kiosk_headers)
    assert future.status_code == 422
    assert "future" in future.json()["detail"]
    _no_full_id(response.text, wrong_check.text, future.text, caplog.text)
    unparsable = api.client.post(  # type: ignore[attr-defined]
        "/api/kiosk/measurements",
        content=b"\xff\xfe{",
        headers={**kiosk_headers, "Content-Type": "application/json"},
    )
    assert unparsable.status_code == 400
    assert unparsable.headers["content-type"] == "application/problem+json"
    refused = [row for row in _audit(api, "observation.store") if row.outcome == "failure"]
    assert len(refused) == 4
    assert "body.measurements.0.blood_pressure" in refused[0].detail
    assert refused[0].actor == "kiosk:KIOSK-V21"


def test_another_township_gets_404_and_is_audited(api: ApiClient, kiosk_headers: dict[str, str]) -> None:
    body = post(api, message(), kiosk_headers).json()
    key = body["patient"]["patient_key"]
    observation_id = body["observations"][0]["id"]
    for user in ("sono1", "doctor1"):  # TOWN01: not above VILLAGE21
        headers = api.headers(user)
        assert api.client.get(f"/api/kiosk/patients/{key}/observations", headers=headers).status_code == 404  # type: ignore[attr-defined]
        assert api.client.get(f"/fhir/Observation/{observation_id}", headers=headers).status_code == 404  # type: ignore[attr-defined]
        assert api.client.get(f"/fhir/Patient/{key}", headers=headers).status_code == 404  # type: ignore[attr-defined]
        search = api.client.get(f"/fhir/Observation?patient={key}", headers=headers).json()  # type: ignore[attr-defined]
        assert search["total"] == 0
        assert api.client.get("/api/kiosk/observations", headers=headers).json() == []  # type: ignore[attr-defined]
    for user in ("village", "sono2", "specialist"):  # the clinic, its township, the county
        listed = api.client.get("/api/kiosk/observations", headers=api.headers(user)).json()  # type: ignore[attr-defined]
        assert len(listed) == 6
    assert api.client.get(f"/api/kiosk/patients/{key}/observations").status_code == 401  # type: ignore[attr-defined]
    denied = [row for row in _audit(api, "observation.read") if row.outcome == "denied"]
    assert {row.actor for row in denied} == {"sono1", "doctor1"}
    assert all(row.patient_id == key for row in denied if "patients" in row.resource)


def test_worklist_filters_alerts(api: ApiClient, kiosk_headers: dict[str, str]) -> None:
    post(api, message(), kiosk_headers)
    later = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    high = message(
        measured_at=later, measurements=[{"type": "blood_pressure", "systolic": 190, "diastolic": 100}]
    )
    answer = post(api, high, kiosk_headers).json()
    assert answer["alert_event_id"] is not None
    assert answer["observations"][0]["alerts"] == ["systolic blood pressure 190 mmHg ≥ 180 mmHg"]
    alerts = api.client.get("/api/kiosk/observations?alerts_only=true", headers=api.headers("village")).json()  # type: ignore[attr-defined]
    assert [o["type"] for o in alerts] == ["blood_pressure"]
    assert alerts[0]["alerts"]
    assert alerts[0]["values"]["systolic"] == 190
    since = (later - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    recent = api.client.get(
        "/api/kiosk/observations", params={"since": since}, headers=api.headers("village")
    )  # type: ignore[attr-defined]
    assert [o["type"] for o in recent.json()] == ["blood_pressure"]
    naive = api.client.get(
        "/api/kiosk/observations", params={"since": "2026-01-01T00:00:00"}, headers=api.headers("village")
    )  # type: ignore[attr-defined]
    assert naive.status_code == 422
    beyond = api.client.get(  # type: ignore[attr-defined]
        "/api/kiosk/observations",
        params={"since": "0001-01-01T00:00:00+01:00"},
        headers=api.headers("village"),
    )
    assert beyond.status_code == 422
    number = api.client.get(  # type: ignore[attr-defined]
        "/api/kiosk/observations", params={"since": "13188"}, headers=api.headers("village")
    )
    assert number.status_code == 422  # not taken as a Unix time
