"""The forwarding queue through the API: scoped per organisation, retry for admins."""

from __future__ import annotations

from datetime import UTC, datetime

from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.storage.tables import ForwardQueueEntry
from tests.conftest import ApiClient
from tests.factories import encode, make_image


def _queue_one(api: ApiClient, organisation: str) -> None:
    """A stored instance with a queue row that failed its last attempt."""
    ds = make_image()
    api.store.store_instance(
        encode(ds), ExplicitVRLittleEndian, calling_ae_title="US", source_organisation=organisation
    )
    now = datetime.now(UTC)
    with api.store.index.engine.begin() as conn:
        conn.execute(
            ForwardQueueEntry.__table__.insert().values(
                sop_instance_uid=ds.SOPInstanceUID,
                study_instance_uid=ds.StudyInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                file_key="k",
                destination_ae_title="PACS",
                rule="county-pacs",
                source_organisation=organisation,
                status="failed",
                attempts=3,
                next_attempt_at=now,
                last_error="association rejected",
                created_at=now,
            )
        )


def test_each_organisation_sees_its_own_rows(api: ApiClient) -> None:
    _queue_one(api, "TOWN01")
    _queue_one(api, "TOWN02")
    town01 = api.client.get("/api/forwarding", headers=api.headers("sono1")).json()  # type: ignore[attr-defined]
    county = api.client.get("/api/forwarding", headers=api.headers("specialist")).json()  # type: ignore[attr-defined]
    assert [e["source_organisation"] for e in town01["entries"]] == ["TOWN01"]
    assert town01["counts"]["failed"] == 1
    assert county["counts"]["failed"] == 2
    assert town01["entries"][0]["last_error"] == "association rejected"


def test_retry_is_for_admins(api: ApiClient) -> None:
    _queue_one(api, "TOWN01")
    denied = api.client.post("/api/forwarding/retry", headers=api.headers("sono1"))  # type: ignore[attr-defined]
    assert denied.status_code == 403
    done = api.client.post("/api/forwarding/retry", headers=api.headers("admin"))  # type: ignore[attr-defined]
    assert done.status_code == 200
    assert len(done.json()["retried"]) == 1
    after = api.client.get("/api/forwarding?status=pending", headers=api.headers("admin")).json()  # type: ignore[attr-defined]
    assert after["counts"]["failed"] == 0
    assert after["counts"]["pending"] == 1


def test_needs_a_token(api: ApiClient) -> None:
    assert api.client.get("/api/forwarding").status_code == 401  # type: ignore[attr-defined]
