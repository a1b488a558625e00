"""Digital signatures: canonical form, keys sealed at rest, verification, tampering, addenda."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
import rfc8785
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from teleconsult.consults import ReportService
from teleconsult.domain.signing import (
    KeyUnsealError,
    canonical_json,
    fingerprint,
    key_encryption_key,
    new_private_key,
    public_key_bytes,
    seal_private_key,
    sign,
    unseal_private_key,
    verify,
)
from teleconsult.storage.signing_keys import SigningKeyStore
from tests.teleconsult.consults.conftest import DRAFT, Consulting, final


def test_canonical_form_is_rfc_8785() -> None:
    value = {"b": [1, 2.5, None, True], "a": "王小明", "c": {"z": 1e21, "y": -0.0}}
    assert canonical_json(value) == '{"a":"王小明","b":[1,2.5,null,true],"c":{"y":0,"z":1e+21}}'.encode()


def test_keys_sign_verify_and_open_only_for_their_owner_and_secret() -> None:
    key = new_private_key()
    public = public_key_bytes(key)
    print_ = fingerprint(public)
    signature = sign(key, b"payload")
    assert verify(public, signature, b"payload")
    assert not verify(public, signature, b"payload!")
    assert not verify(public, "not base64!", b"payload")

    kek = key_encryption_key("s" * 40)
    sealed = seal_private_key(kek, key, "specialist", print_)
    raw = key.private_bytes_raw()
    assert raw not in base64.b64decode(sealed)
    assert public_key_bytes(unseal_private_key(kek, sealed, "specialist", print_)) == public
    with pytest.raises(KeyUnsealError):
        unseal_private_key(key_encryption_key("t" * 40), sealed, "specialist", print_)
    with pytest.raises(KeyUnsealError):
        unseal_private_key(kek, sealed, "doctor1", print_)  # moved to another user's row


def test_anyone_can_recompute_what_was_signed(consulting: Consulting) -> None:
    """The documented payload, rebuilt from the API's JSON with a plain RFC 8785 library, verifies."""
    consult = final(consulting)
    cid = consult["id"]
    versions = consulting.get("sono1", f"/api/consults/{cid}/report/versions").json()
    [version] = versions
    performing, reviewing = version["signatures"]
    keys = SigningKeyStore(consulting.api.store.index.engine, "unused-secret-for-reading-public-keys")

    def payload(signature: dict[str, Any], refers_to: dict[str, Any] | None) -> bytes:
        return rfc8785.dumps(
            {
                "format": "teleconsult-report-signature/1",
                "consult_id": cid,
                "study_instance_uid": consult["study_instance_uid"],
                "patient": {"id": "P0001", "issuer": "TOWN01"},
                "report": {
                    "version": version["version"],
                    "kind": version["kind"],
                    "template": version["template"],
                    "content": version["content"],
                    "content_sha256": version["content_sha256"],
                    "author": version["author"],
                    "author_organisation": version["author_organisation"],
                    "created_at": _signed_time(version["created_at"]),
                },
                "signature": {
                    "role": signature["role"],
                    "signer": signature["signer"],
                    "signer_name": signature["signer_name"],
                    "signer_organisation": signature["signer_organisation"],
                    "signed_at": _signed_time(signature["signed_at"]),
                    "algorithm": "Ed25519",
                    "key_fingerprint": signature["key_fingerprint"],
                },
                "refers_to": refers_to,
            }
        )

    for signature, refers_to in [
        (performing, None),
        (
            reviewing,
            {
                "performing_version": 1,
                "performing_signer": "doctor1",
                "performing_signature": performing["signature"],
            },
        ),
    ]:
        public = keys.public_key(signature["key_fingerprint"])
        assert public is not None
        assert verify(public, signature["signature"], payload(signature, refers_to)), signature["role"]


def _signed_time(value: str) -> str:
    """Times in the signed form: UTC, milliseconds, ``Z`` (docs/consults.md)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def _drop_append_only_triggers(engine: Engine) -> None:
    """What someone with the schema owner's rights can do behind the application's back."""
    with engine.begin() as conn:
        for table in ("report_versions", "report_signatures"):
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
            else:
                conn.execute(text(f"DROP TRIGGER {table}_no_update"))


def _verify(consulting: Consulting, cid: str) -> dict[str, Any]:
    response = consulting.get("sono1", f"/api/consults/{cid}/report/verify")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_the_database_refuses_to_change_a_signed_report(consulting: Consulting) -> None:
    consult = final(consulting)
    engine = consulting.api.store.index.engine
    for statement in (
        "UPDATE report_versions SET content = '{}'",
        "DELETE FROM report_versions",
        "UPDATE report_signatures SET signer = 'mallory'",
        "DELETE FROM report_signatures",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert _verify(consulting, consult["id"])["valid"] is True


def test_a_tampered_report_fails_verification(consulting: Consulting) -> None:
    engine = consulting.api.store.index.engine
    _drop_append_only_triggers(engine)
    changed, rehashed, moved, renamed = (final(consulting) for _ in range(4))

    # 1. the impression rewritten in the stored row
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT v.pk, v.content FROM report_versions v JOIN consults c ON c.pk = v.consult_pk "
                "WHERE c.consult_id = :cid"
            ),
            {"cid": changed["id"]},
        ).one()
        content = json.loads(row.content)
        content["impression"] = "未见异常"
        conn.execute(
            text("UPDATE report_versions SET content = :content WHERE pk = :pk"),
            {"content": canonical_json(content).decode(), "pk": row.pk},
        )
    result = _verify(consulting, changed["id"])
    assert result["valid"] is False
    assert {s["reason"] for s in result["signatures"]} == {"the content of version 1 was changed"}
    report = consulting.get("sono1", f"/api/consults/{changed['id']}/report").json()
    assert report["impression"] == "未见异常"  # what is served is what is checked

    # 2. rewritten with its digest recomputed: the signatures still do not match
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT v.pk, v.content FROM report_versions v JOIN consults c ON c.pk = v.consult_pk "
                "WHERE c.consult_id = :cid"
            ),
            {"cid": rehashed["id"]},
        ).one()
        content = json.loads(row.content)
        content["findings"]["liver"]["right_lobe_oblique_mm"] = 150
        data = canonical_json(content)
        conn.execute(
            text("UPDATE report_versions SET content = :content, content_sha256 = :sha WHERE pk = :pk"),
            {"content": data.decode(), "sha": hashlib.sha256(data).hexdigest(), "pk": row.pk},
        )
    result = _verify(consulting, rehashed["id"])
    assert result["valid"] is False
    assert {s["reason"] for s in result["signatures"]} == {"the signed data was changed after signing"}

    # 3. the report moved to another study
    other = consulting.store_study()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE consults SET study_instance_uid = :uid WHERE consult_id = :cid"),
            {"uid": other.StudyInstanceUID, "cid": moved["id"]},
        )
    result = _verify(consulting, moved["id"])
    assert result["valid"] is False
    assert [s["valid"] for s in result["signatures"]] == [False, False]

    # 4. the performing signer renamed: that signature fails
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE report_signatures SET signer_name = 'someone else' WHERE role = 'performing' "
                "AND consult_pk = (SELECT pk FROM consults WHERE consult_id = :cid)"
            ),
            {"cid": renamed["id"]},
        )
    result = _verify(consulting, renamed["id"])
    assert result["valid"] is False
    assert [(s["role"], s["valid"], s["reason"]) for s in result["signatures"]] == [
        ("performing", False, "the signed data was changed after signing"),
        ("reviewing", True, "valid"),
    ]
    untouched = final(consulting)
    assert _verify(consulting, untouched["id"])["valid"] is True


def test_a_final_report_changes_only_by_signed_addenda(consulting: Consulting) -> None:
    consult = final(consulting)
    cid = consult["id"]
    path = f"/api/consults/{cid}/report"
    addendum = {"text": "补充：CT增强示肝血管瘤。", "reason": "增强CT结果回报"}
    assert consulting.post("doctor1", f"{path}/addenda", addendum).status_code == 403
    assert consulting.post("specialist2", f"{path}/addenda", addendum).status_code == 403  # not the assignee
    assert consulting.post("specialist", f"{path}/addenda", {"text": " "}).status_code == 422

    response = consulting.post("specialist", f"{path}/addenda", addendum)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "amended"
    assert report["final_version"] == 1
    assert report["impression"] == DRAFT["impression"]  # the signed report itself is unchanged
    [added] = report["addenda"]
    assert (added["version"], added["kind"], added["content"]) == (2, "addendum", addendum)
    [signature] = added["signatures"]
    assert (signature["role"], signature["signer"], signature["refers_to_version"]) == (
        "reviewing",
        "specialist",
        1,
    )
    assert consulting.post("specialist", f"{path}/addenda", {"text": "再补充"}).status_code == 201

    versions = consulting.get("sono1", f"{path}/versions").json()
    assert [(v["version"], v["kind"], len(v["signatures"])) for v in versions] == [
        (1, "report", 2),
        (2, "addendum", 1),
        (3, "addendum", 1),
    ]
    verification = _verify(consulting, cid)
    assert verification["valid"] is True
    assert len(verification["signatures"]) == 4
    signed = [data for _, data in consulting.events("report.signed")]
    assert [(d["version"], d["kind"]) for d in signed] == [(1, "report"), (2, "addendum"), (3, "addendum")]


def test_rotating_the_secret_key_keeps_old_signatures_valid(consulting: Consulting) -> None:
    consult = final(consulting)
    old = consulting.get("sono1", f"/api/consults/{consult['id']}/report").json()["signatures"][1][
        "key_fingerprint"
    ]
    rotated = ReportService(consulting.consults, "a-completely-different-secret-key-0123456789")
    consulting.api.client.app.state.reports = rotated  # type: ignore[attr-defined]
    response = consulting.post(
        "specialist", f"/api/consults/{consult['id']}/report/addenda", {"text": "补充"}
    )
    assert response.status_code == 201, response.text
    new = response.json()["addenda"][0]["signatures"][0]["key_fingerprint"]
    assert new != old
    assert _verify(consulting, consult["id"])["valid"] is True
    with consulting.api.store.index.engine.connect() as conn:
        keys = conn.execute(
            text("SELECT fingerprint, retired_at FROM signing_keys WHERE username = 'specialist' ORDER BY pk")
        ).all()
    assert [(k.fingerprint, k.retired_at is None) for k in keys] == [(old, False), (new, True)]
