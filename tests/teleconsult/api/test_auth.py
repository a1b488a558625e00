"""Sign-in, refresh, and the 401/403 rules of DESIGN.md."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from teleconsult.domain.identity import Role
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, ApiClient


def test_password_grant_and_me(api: ApiClient) -> None:
    response = api.client.post("/api/auth/token", data={"username": "sono2", "password": PASSWORD})  # type: ignore[attr-defined]
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    me = api.client.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})  # type: ignore[attr-defined]
    assert me.json() == {
        "username": "sono2",
        "role": "sonographer",
        "organisation": "TOWN02",
        "visible_organisations": ["TOWN02", "VILLAGE21"],
    }


def test_county_sees_the_whole_tree(api: ApiClient) -> None:
    me = api.client.get("/api/me", headers=api.headers("specialist")).json()  # type: ignore[attr-defined]
    assert me["visible_organisations"] == ["COUNTY", "TOWN01", "TOWN02", "VILLAGE21"]


@pytest.mark.parametrize(
    ("username", "password"), [("sono2", "wrong-password"), ("nobody", PASSWORD), ("", ""), ("sono2", "")]
)
def test_wrong_credentials_are_401_problems(api: ApiClient, username: str, password: str) -> None:
    response = api.client.post("/api/auth/token", data={"username": username, "password": password})  # type: ignore[attr-defined]
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated"
    assert PASSWORD not in response.text


def _forge(claims: dict[str, object], key: str = "x" * 40, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _alg_none(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_missing_expired_forged_and_alg_none_tokens_are_401(api: ApiClient) -> None:
    key = api.client.app.state.secret_key  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    good = {"sub": "specialist", "role": "specialist", "aud": "teleconsult", "typ": "access"}
    tokens = {
        "missing": None,
        "garbage": "not-a-token",
        "expired": _forge({**good, "exp": now - timedelta(minutes=1)}, key),
        "forged": _forge({**good, "exp": now + timedelta(minutes=5)}),
        "alg none": _alg_none({**good, "exp": int((now + timedelta(minutes=5)).timestamp())}),
        "wrong audience": _forge({**good, "aud": "other", "exp": now + timedelta(minutes=5)}, key),
    }
    for label, token in tokens.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = api.client.get("/api/me", headers=headers)  # type: ignore[attr-defined]
        assert response.status_code == 401, label
        assert response.json()["status"] == 401, label


def test_refresh_token_rotates(api: ApiClient) -> None:
    first = api.client.post("/api/auth/token", data={"username": "doctor1", "password": PASSWORD}).json()  # type: ignore[attr-defined]
    second = api.client.post(  # type: ignore[attr-defined]
        "/api/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    replay = api.client.post(  # type: ignore[attr-defined]
        "/api/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert replay.status_code == 401


def test_disabled_user_loses_access_at_once(api: ApiClient) -> None:
    headers = api.headers("sono1")
    IdentityStore(api.store.index.engine).set_disabled("sono1", True)
    assert api.client.get("/api/me", headers=headers).status_code == 401  # type: ignore[attr-defined]
    response = api.client.post("/api/auth/token", data={"username": "sono1", "password": PASSWORD})  # type: ignore[attr-defined]
    assert response.status_code == 401


def test_identity_store_rules(api: ApiClient) -> None:
    identity = IdentityStore(api.store.index.engine)
    with pytest.raises(ValueError, match="organisation code"):
        identity.add_organisation("bad code", "x")
    with pytest.raises(Exception, match="already exists"):
        identity.add_organisation("TOWN01", "again")
    with pytest.raises(Exception, match="does not exist"):
        identity.add_user("newuser", PASSWORD, Role.SPECIALIST, "NOWHERE")
    with pytest.raises(ValueError, match="8 characters"):
        identity.add_user("newuser", "short", Role.SPECIALIST, "COUNTY")
    with api.store.index.engine.connect() as conn:
        stored_hash = conn.exec_driver_sql("SELECT password_hash FROM users WHERE username='sono1'").scalar()
    assert stored_hash.startswith("$argon2")


def test_failed_sign_in_is_audited_once_with_the_name_tried(api: ApiClient) -> None:
    api.client.post("/api/auth/token", data={"username": "sono2", "password": "wrong-password"})  # type: ignore[attr-defined]
    rows = api.client.app.state.audit.query(actor="sono2", outcome="denied")  # type: ignore[attr-defined]
    assert len(rows) == 1
    assert rows[0]["action"] == "login"
    assert "wrong-password" not in str(rows[0])
