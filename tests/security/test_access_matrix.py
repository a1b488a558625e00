"""Every HTTP operation against forged and foreign credentials, taken from the app's own OpenAPI schema.

Two sweeps, so that a route added later is covered without being listed
here:

- every operation the schema marks as needing a bearer token, called with
  each kind of bad credential (none, not a JWT, another key, ``alg=none``,
  expired, a refresh-type token, an unknown or disabled account, another
  scheme), answers 401 as problem+json with ``WWW-Authenticate: Bearer``,
  and each attempt is an audit row ``denied`` naming the request;
- every operation on a study path, called by users of another township
  (TOWN02 and its village) for a TOWN01 study, serves nothing (404, or an
  empty search) and leaves a ``denied`` row for that study; the same calls by
  TOWN01's own user and the county's specialist succeed, so the sweep can
  tell a refusal from a route that fails for everyone.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from pydicom.dataset import Dataset

from teleconsult.audit import AuditLog
from teleconsult.security import issue_access_token
from teleconsult.storage.identity import IdentityStore
from tests.conftest import ApiClient
from tests.factories import encode, make_image

_PARAMETER = re.compile(r"{(\w+)}")
# Values for path parameters that are not a study's UIDs: well-formed, so a route
# that checked its parameters before the caller would answer 422, not 401.
_FILLERS = {
    "consult_id": "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e5f",
    "referral_id": "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e60",
    "session_id": "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e61",
    "report_id": "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e62",
    "observation_id": "1",
    "patient_key": "110101199003074514",
    "code": "us-abdomen",
    "version": "1",
    "organisation": "TOWN01",
    "department": "ultrasound",
    "username": "sono1",
    "path": "7FE00010",
    "frames": "1",
}
# Answers that serve nothing of a study: not found, or a search that found nothing.
_EMPTY_SEARCH = b"[]"


def _claims(username: str, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims = {
        "sub": username,
        "role": "admin",
        "iat": now,
        "exp": now + timedelta(minutes=10),
        "aud": "teleconsult",
        "typ": "access",
    }
    claims.update(changes)
    return claims


def _bad_credentials(api: ApiClient) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused; ``admin`` would be allowed everything."""
    key = api.client.app.state.secret_key  # type: ignore[attr-defined]
    identity = IdentityStore(api.store.index.engine)
    identity.add_user("leaver", "correct-horse-battery", "admin", "COUNTY")
    leaver, _ = issue_access_token(key, "leaver", "admin", 10)
    identity.set_disabled("leaver", True)
    expired, _ = issue_access_token(key, "admin", "admin", -5)
    tokens = {
        "no token": None,
        "not a JWT": "not-a-token",
        "signed with another key": jwt.encode(_claims("admin"), "another-key-of-32-bytes-at-least!", "HS256"),
        "alg=none": jwt.encode(_claims("admin"), None, algorithm="none"),
        "expired": expired,
        "not an access token": jwt.encode(_claims("admin", typ="refresh"), key, "HS256"),
        "other audience": jwt.encode(_claims("admin", aud="elsewhere"), key, "HS256"),
        "unknown account": jwt.encode(_claims("ghost"), key, "HS256"),
        "disabled account": leaver,
    }
    headers = {name: {"Authorization": f"Bearer {token}"} if token else {} for name, token in tokens.items()}
    headers["another scheme"] = {"Authorization": "Basic YWRtaW46Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"}
    return headers


def _operations(api: ApiClient, *, secured: bool) -> list[tuple[str, str]]:
    """(method, path template) of the schema's operations (secured ones, or all)."""
    schema = api.client.get("/openapi.json").json()  # type: ignore[attr-defined]
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if not secured or operation.get("security")
    ]


def _fill(template: str, values: dict[str, str]) -> str:
    return _PARAMETER.sub(lambda m: values[m.group(1)], template)


@pytest.fixture
def stored(api: ApiClient) -> Dataset:
    """A TOWN01 ultrasound image, with pixels (frames and rendered views have something to serve)."""
    ds = make_image(rows=16, columns=16)
    api.store.store_instance(
        encode(ds), ds.file_meta.TransferSyntaxUID, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    return ds


def _uids(ds: Dataset) -> dict[str, str]:
    return {
        **_FILLERS,
        "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID,
        "instance": ds.SOPInstanceUID,
    }


def test_every_secured_operation_refuses_every_bad_credential(api: ApiClient, stored: Dataset) -> None:
    operations = _operations(api, secured=True)
    assert len(operations) > 60  # the sweep found the API, not an empty schema
    sent: Counter[str] = Counter()
    wrong = []
    for name, headers in _bad_credentials(api).items():
        for method, template in operations:
            path = _fill(template, _uids(stored))
            response = api.client.request(method, path, headers=headers)  # type: ignore[attr-defined]
            sent[f"{method} {path}"] += 1
            if (
                response.status_code != 401
                or response.headers.get("content-type") != "application/problem+json"
                or response.headers.get("www-authenticate") != "Bearer"
            ):
                wrong.append((name, method, template, response.status_code, response.text[:120]))
    assert wrong == []
    denied = AuditLog(api.store.index.engine).query(outcome="denied", limit=100_000)
    recorded = Counter(row["resource"] for row in denied if row["actor"] in ("anonymous", "ghost", "leaver"))
    missing = {resource: count for resource, count in (sent - recorded).items()}
    assert missing == {}, "refused attempts missing from the audit trail"


def _study_operations(api: ApiClient) -> list[tuple[str, str]]:
    """Reads of one study's data: every GET whose path names a study."""
    return [
        (method, path)
        for method, path in _operations(api, secured=True)
        if "{study}" in path and method == "GET"
    ]


@pytest.mark.parametrize("outsider", ["sono2", "village"])
def test_another_townships_study_is_served_to_nobody_outside(
    api: ApiClient, stored: Dataset, outsider: str
) -> None:
    operations = _study_operations(api)
    assert len(operations) >= 15
    headers = {user: api.headers(user) for user in (outsider, "sono1", "specialist")}
    served = []
    for method, template in operations:
        path = _fill(template, _uids(stored))
        # Insiders first: the township's own user and the county above it are served.
        for insider in ("sono1", "specialist"):
            response = api.client.request(method, path, headers=headers[insider])  # type: ignore[attr-defined]
            assert response.status_code == 200, (insider, template, response.status_code, response.text[:200])
            assert response.content, (insider, template)
        response = api.client.request(method, path, headers=headers[outsider])  # type: ignore[attr-defined]
        if not (
            response.status_code == 404 or (response.status_code == 200 and response.content == _EMPTY_SEARCH)
        ):
            served.append((template, response.status_code, response.content[:120]))
    assert served == [], f"{outsider} was served a TOWN01 study"
    denied = AuditLog(api.store.index.engine).query(
        outcome="denied", actor=outsider, study_instance_uid=stored.StudyInstanceUID, limit=1000
    )
    unrecorded = Counter(f"{m} {_fill(t, _uids(stored))}" for m, t in operations) - Counter(
        row["resource"] for row in denied
    )
    assert dict(unrecorded) == {}, "refusals missing from the audit trail (with the study they were for)"
    assert {row["patient_id"] for row in denied} == {stored.PatientID}
