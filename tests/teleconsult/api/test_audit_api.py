"""GET /api/audit and /api/audit/export: admins only, within their organisations, themselves audited."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.storage.identity import IdentityStore
from tests.atna import assert_audit_message, coded
from tests.conftest import PASSWORD, ApiClient
from tests.factories import encode, make_image

NOT_ADMINS = ["specialist", "sono1", "doctor1", "sono2", "village"]


def _get(api: ApiClient, path: str, username: str | None, **params: Any) -> Any:
    headers = api.headers(username) if username else {}
    return api.client.get(path, headers=headers, params=params)  # type: ignore[attr-defined]


def _headers(api: ApiClient) -> dict[str, dict[str, str]]:
    """One sign-in per user (argon2 makes each one slow on purpose)."""
    return {username: api.headers(username) for username in NOT_ADMINS}


def _log(api: ApiClient) -> AuditLog:
    return AuditLog(api.store.index.engine)


def _dicom_event(actor: str, organisation: str | None) -> AuditEvent:
    return AuditEvent(
        action="query",
        outcome=AuditOutcome.SUCCESS,
        interface=Interface.DICOM,
        actor=actor,
        actor_organisation=organisation,
        resource="C-FIND STUDY 1.2.840.10008.5.1.4.1.2.2.1",
        detail="STUDY level, 0 matches; keys: none",
    )


@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/export"])
def test_only_admins_read_the_trail_and_refusals_are_audited(api: ApiClient, path: str) -> None:
    assert _get(api, path, None).status_code == 401
    for username, headers in _headers(api).items():
        # 403 before any check of the filters
        response = api.client.get(path, headers=headers, params={"limit": 5000})  # type: ignore[attr-defined]
        assert response.status_code == 403, username
        assert response.json()["code"] == "forbidden"
    denied = _log(api).query(outcome="denied", limit=100)
    by_actor = {row["actor"]: row for row in denied if row["resource"] == f"GET {path}"}
    assert set(by_actor) == {*NOT_ADMINS, "anonymous"}
    assert by_actor["sono1"]["actor_organisation"] == "TOWN01"
    assert by_actor["sono1"]["role"] == "sonographer"


def test_admin_lists_with_filters(api: ApiClient) -> None:
    for username in ("sono1", "sono2", "sono1"):
        api.token(username)
    _get(api, "/api/audit", "sono1")  # a 403 on record
    admin = api.headers("admin")

    def listed(**params: Any) -> list[dict[str, Any]]:
        response = api.client.get("/api/audit", headers=admin, params=params)  # type: ignore[attr-defined]
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    rows = listed()
    assert [row["pk"] for row in rows] == sorted((row["pk"] for row in rows), reverse=True)
    assert {"sono1", "sono2", "admin"} <= {row["actor"] for row in rows}
    assert all("chain_sha256" not in row for row in rows)
    expected = set(AuditEvent.__dataclass_fields__) | {"pk", "time"}
    assert set(rows[0]) == expected
    # RFC 3339 times with their offset, whatever the index hands back (SQLite's are naive).
    assert all(datetime.fromisoformat(row["time"]).utcoffset() == timedelta(0) for row in rows)
    assert {row["action"] for row in listed(actor="sono1")} == {"login", "access"}
    assert [row["actor"] for row in listed(outcome="denied")] == ["sono1"]
    assert len(listed(limit=2)) == 2
    # Each read adds its own event: paging is stable below a fixed ``until``.
    frozen = datetime.now(UTC).isoformat()
    assert listed(until=frozen, limit=1, offset=1)[0]["pk"] == listed(until=frozen, limit=2)[1]["pk"]
    chained = listed(include_chain="true", limit=3)
    assert all(len(row["chain_sha256"]) == 64 for row in chained)
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert listed(since=soon) == []
    assert len(listed(until=soon)) > 0
    for bad in (
        {"limit": 1001},
        {"limit": 0},
        {"offset": -1},
        {"offset": 2**63},
        {"outcome": "maybe"},
        {"since": "yesterday"},
        {"until": "7.576649432184083e-28"},  # pydantic would read a number as a Unix time
        {"since": "1700000000"},
        {"since": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
        {"actor": "sono\x001"},
    ):
        response = api.client.get("/api/audit", headers=admin, params=bad)  # type: ignore[attr-defined]
        assert response.status_code == 422, bad


def test_reading_the_trail_is_on_the_trail(api: ApiClient) -> None:
    headers = api.headers("admin")
    api.client.get("/api/audit", headers=headers, params={"actor": "sono1"})  # type: ignore[attr-defined]
    api.client.get("/api/audit/export", headers=headers)  # type: ignore[attr-defined]
    reads = [row for row in _log(api).query(actor="admin") if row["action"].startswith("audit.")]
    assert [(row["action"], row["outcome"], row["resource"]) for row in reads] == [
        ("audit.export", "success", "GET /api/audit/export"),
        ("audit.read", "success", "GET /api/audit"),
    ]
    assert reads[1]["detail"].endswith("actor=sono1; limit=100, offset=0")
    assert reads[1]["actor_organisation"] == "COUNTY"


def test_an_admin_sees_only_their_organisations(api: ApiClient) -> None:
    IdentityStore(api.store.index.engine).add_user("admin2", PASSWORD, "admin", "TOWN02")
    for username in ("sono1", "sono2", "village"):
        api.token(username)
    log = _log(api)
    # STORESCU is TOWN02's peer, TOWNUS TOWN01's (conftest); a row recorded without
    # an organisation still belongs to its peer's.
    log.record(_dicom_event("STORESCU", None))
    log.record(_dicom_event("TOWNUS", "TOWN01"))
    log.record(_dicom_event("STRANGER", None))

    town02 = _get(api, "/api/audit", "admin2", limit=1000).json()
    assert {row["actor"] for row in town02} == {"sono2", "village", "STORESCU", "admin2"}
    county = _get(api, "/api/audit", "admin", limit=1000).json()
    assert {"sono1", "sono2", "village", "STORESCU", "TOWNUS", "admin2", "admin"} <= {
        row["actor"] for row in county
    }
    # Nobody's organisation: only `teleconsult audit export` shows it.
    assert "STRANGER" not in {row["actor"] for row in county}
    exported = ET.fromstring(_get(api, "/api/audit/export", "admin2", limit=1000).content)
    users = {message.find("ActiveParticipant").get("UserID") for message in exported}  # type: ignore[union-attr]
    assert users == {"sono2", "village", "STORESCU", "admin2"}


def test_export_is_atna_xml(api: ApiClient) -> None:
    api.token("sono1")
    _get(api, "/api/audit", "sono1")  # denied
    _log(api).record(
        AuditEvent(
            action="retrieve",
            outcome=AuditOutcome.SUCCESS,
            interface=Interface.DICOM,
            actor="TOWNUS",
            actor_organisation="TOWN01",
            source_address="127.0.0.1",
            resource="C-MOVE STUDY 1.2.840.10008.5.1.4.1.2.2.2",
            study_instance_uid="1.2.826.0.1.3680043.10.1.7",
            patient_id="P7",
            detail="final status 0x0000 to TOWNUS: 1 sent; studies=1.2.826.0.1.3680043.10.1.7",
        )
    )
    response = _get(api, "/api/audit/export", "admin", limit=1000)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "AuditMessages"
    for message in root:
        assert_audit_message(message)

    def event_ids(message: ET.Element) -> tuple[str, str]:
        event = message.find("EventIdentification")
        assert event is not None
        return coded(event.find("EventID"))[0], event.get("EventOutcomeIndicator") or ""  # type: ignore[arg-type]

    summary = [(message.find("ActiveParticipant").get("UserID"), *event_ids(message)) for message in root]  # type: ignore[union-attr]
    assert ("sono1", "110114", "0") in summary  # sign-in
    assert ("sono1", "110110", "4") in summary  # refused: minor failure
    assert ("TOWNUS", "110104", "0") in summary  # instances transferred
    (transfer,) = [message for message in root if event_ids(message)[0] == "110104"]
    objects = {
        (obj.get("ParticipantObjectTypeCode"), obj.get("ParticipantObjectTypeCodeRole")): obj.get(
            "ParticipantObjectID"
        )
        for obj in transfer.findall("ParticipantObjectIdentification")
    }
    assert objects == {("1", "1"): "P7", ("2", "3"): "1.2.826.0.1.3680043.10.1.7"}


# -- cross-organisation attempts through the routes that exist ------------------------------------


def _paths(api: ApiClient) -> set[str]:
    return set(api.client.app.openapi()["paths"])  # type: ignore[attr-defined]


def _store_study(api: ApiClient, organisation: str, patient_id: str) -> str:
    ds = make_image(patient_id=patient_id)
    api.store.store_instance(
        encode(ds), ExplicitVRLittleEndian, calling_ae_title="STORESCU", source_organisation=organisation
    )
    return str(ds.StudyInstanceUID)


def test_me_shows_only_the_own_branch(api: ApiClient) -> None:
    me = _get(api, "/api/me", "sono1").json()
    assert me["visible_organisations"] == ["TOWN01"]
    assert _get(api, "/api/me", "village").json()["visible_organisations"] == ["VILLAGE21"]


def test_township_user_cannot_find_or_read_another_townships_study(api: ApiClient) -> None:
    if "/dicomweb/studies" not in _paths(api):
        pytest.skip("no DICOMweb routes in this build")
    own = _store_study(api, "TOWN01", "P1")
    other = _store_study(api, "TOWN02", "P2")
    found = _get(api, "/dicomweb/studies", "sono1").json()
    uids = {study["0020000D"]["Value"][0] for study in found}
    assert uids == {own}
    assert _get(api, f"/dicomweb/studies/{other}/series", "sono1").json() == []
    denied = [
        row for row in _log(api).query(actor="sono1", outcome="denied") if row["study_instance_uid"] == other
    ]
    assert denied, "the attempt on TOWN02's study is not on record"
    if "/dicomweb/studies/{study}/metadata" in _paths(api):
        response = _get(api, f"/dicomweb/studies/{other}/metadata", "sono1")
        assert response.status_code == 404  # as if it did not exist
        assert (
            len(
                [
                    row
                    for row in _log(api).query(actor="sono1", outcome="denied")
                    if row["study_instance_uid"] == other
                ]
            )
            == len(denied) + 1
        )
    # The county sees it.
    county = _get(api, "/dicomweb/studies", "specialist").json()
    assert {study["0020000D"]["Value"][0] for study in county} == {own, other}
