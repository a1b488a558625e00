"""GET /api/studies/{study}/ecg-measurements: read like the study, audited, problem+json errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.ecg.synthetic import inferior_stemi, synthesise
from device_adapters.ecg.triage import EcgTriage
from teleconsult.config import Settings
from teleconsult.storage.store import InstanceStore
from tests.conftest import ApiClient
from tests.device_adapters.triage.conftest import ecg_dataset, store_ecg


@pytest.fixture
def api(app_settings: Settings, store: InstanceStore, community: object) -> Iterator[ApiClient]:
    """tests/conftest.py's ``api`` on the triage fixtures' community; its lifespan runs the analyser."""
    from fastapi.testclient import TestClient

    from teleconsult.api.app import create_app

    with TestClient(create_app(app_settings, store)) as client:
        yield ApiClient(client=client, store=store, settings=app_settings)


def _analyser(api: ApiClient) -> EcgTriage:
    triage: EcgTriage = api.client.app.state.ecg_triage  # type: ignore[attr-defined]
    return triage


def _get(api: ApiClient, uid: str, user: str):  # type: ignore[no-untyped-def]
    return api.client.get(f"/api/studies/{uid}/ecg-measurements", headers=api.headers(user))  # type: ignore[attr-defined]


def test_the_county_reads_the_measurements_a_township_ecg_got(api: ApiClient) -> None:
    ds = store_ecg(api.store, ecg_dataset(synthesise(st_offsets=inferior_stemi(0.25)), patient_id="E1"))
    assert _analyser(api).wait_idle(120)
    response = _get(api, ds.StudyInstanceUID, "specialist")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["study_instance_uid"] == ds.StudyInstanceUID
    (ecg,) = body["ecgs"]
    assert ecg["sop_instance_uid"] == ds.SOPInstanceUID
    assert (ecg["status"], ecg["current"], ecg["positive"]) == ("analysed", True, True)
    assert ecg["consult_id"]
    assert ecg["measurements"]["qrs_ms"] == pytest.approx(90, abs=12)
    assert ecg["screen"]["reason"].endswith("needs physician confirmation")
    assert ecg["confirmation"] == "needs physician confirmation"
    # the township that took it sees it too
    assert _get(api, ds.StudyInstanceUID, "sono1").status_code == 200
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    (success,) = [r for r in audit.query(actor="specialist") if r["action"] == "study.read"]
    assert success["outcome"] == "success"
    assert success["study_instance_uid"] == ds.StudyInstanceUID
    assert success["patient_id"] == "E1"


def test_another_townships_user_gets_404_as_for_no_study_and_is_audited_as_denied(api: ApiClient) -> None:
    ds = store_ecg(api.store, ecg_dataset(synthesise(), patient_id="E2"))
    denied = _get(api, ds.StudyInstanceUID, "sono2")  # TOWN02
    absent = _get(api, "1.2.3.4.5.6", "sono2")
    assert denied.status_code == absent.status_code == 404
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["code"] == absent.json()["code"] == "not-found"
    assert ds.StudyInstanceUID not in absent.json()["detail"]
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    (denial,) = audit.query(actor="sono2", outcome="denied")
    assert denial["study_instance_uid"] == ds.StudyInstanceUID
    assert denial["patient_id"] == "E2"


def test_an_ecg_not_yet_analysed_is_listed_as_pending(api: ApiClient) -> None:
    triage = _analyser(api)
    triage.stop()  # nothing analyses it
    ds = store_ecg(api.store, ecg_dataset(synthesise()))
    (ecg,) = _get(api, ds.StudyInstanceUID, "specialist").json()["ecgs"]
    assert (ecg["status"], ecg["measurements"]) == ("pending", None)


def test_bad_uid_and_no_token_are_problems(api: ApiClient) -> None:
    bad = _get(api, "1.2.x", "specialist")
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    anonymous = api.client.get("/api/studies/1.2.3/ecg-measurements")  # type: ignore[attr-defined]
    assert anonymous.status_code == 401
