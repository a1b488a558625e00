"""Signing in on /api/events: ready, every refusal with 4001 and a reason, all of it audited."""

from __future__ import annotations

import logging
import time
from typing import Any

import jwt
import pytest
from starlette.websockets import WebSocketDisconnect

from teleconsult.audit import AuditLog
from teleconsult.errors import IndexUnavailableError
from teleconsult.notifications import CloseCode
from teleconsult.security import issue_access_token
from teleconsult.storage.identity import IdentityStore
from tests.teleconsult.notifications.conftest import Events


def _refusal(ws: Any) -> tuple[dict[str, Any], WebSocketDisconnect]:
    """The final error message and the close that follows it."""
    error = ws.receive_json()
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return error, closed.value


def _until_closed(ws: Any, limit: int = 5) -> tuple[list[dict[str, Any]], WebSocketDisconnect]:
    """Every message up to the close, and the close."""
    messages = []
    for _ in range(limit):
        try:
            messages.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return messages, closed
    raise AssertionError(f"not closed after {limit} messages: {messages}")


def _audit_rows(events: Events, action: str) -> list[dict[str, Any]]:
    rows = AuditLog(events.consulting.api.store.index.engine).query(limit=1000)
    return [row for row in rows if row["action"] == action]


def _key(events: Events) -> str:
    return str(events.consulting.api.client.app.state.secret_key)  # type: ignore[attr-defined]


def test_ready_then_pong_and_the_connection_is_audited(events: Events) -> None:
    with events.connect("sono1") as socket:
        socket.ws.send_json({"type": "ping"})
        assert socket.next() == {"type": "pong"}
    connects = _audit_rows(events, "events.connect")
    assert [(r["actor"], r["outcome"], r["interface"], r["actor_organisation"]) for r in connects] == [
        ("sono1", "success", "websocket", "TOWN01")
    ]
    assert connects[0]["resource"] == "WEBSOCKET /api/events"
    deadline = time.monotonic() + 5  # the close is recorded as the handler ends, after the client left
    while not _audit_rows(events, "events.close") and time.monotonic() < deadline:
        time.sleep(0.05)
    (closed,) = _audit_rows(events, "events.close")
    assert closed["actor"] == "sono1"
    assert closed["detail"].startswith("closed by the client after 1 events")


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ({"type": "auth"}, 'needs "token"'),
        ({"type": "auth", "token": ""}, 'needs "token"'),
        ({"type": "auth", "token": "not-a-jwt"}, "invalid or expired"),
        ({"type": "ping"}, "first message must be"),
        ("not json", "not JSON"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_missing_bad_or_misplaced_auth_is_refused_with_4001(
    events: Events, message: Any, detail: str
) -> None:
    with events.raw() as ws:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_json(message)
        error, closed = _refusal(ws)
    assert closed.code == CloseCode.UNAUTHENTICATED == 4001
    assert detail in closed.reason
    assert error["type"] == "error"
    assert error["problem"]["code"] == "unauthenticated"
    assert error["problem"]["status"] == 401
    assert error["problem"]["close_code"] == 4001
    assert detail in error["problem"]["detail"]
    (refused,) = _audit_rows(events, "events.connect")
    assert (refused["actor"], refused["outcome"], refused["interface"]) == (
        "anonymous",
        "denied",
        "websocket",
    )
    assert detail in refused["detail"]


def test_an_expired_token_is_refused(events: Events) -> None:
    token, _ = issue_access_token(_key(events), "sono1", "sonographer", -1)
    with events.raw() as ws:
        ws.send_json({"type": "auth", "token": token})
        error, closed = _refusal(ws)
    assert closed.code == 4001
    assert "expired" in error["problem"]["detail"]


def test_a_token_signed_with_another_key_is_refused(events: Events) -> None:
    token, _ = issue_access_token("another-key-of-at-least-32-characters!!", "specialist", "specialist", 15)
    with events.raw() as ws:
        ws.send_json({"type": "auth", "token": token})
        _, closed = _refusal(ws)
    assert closed.code == 4001


def test_no_auth_message_in_time_is_refused(events: Events) -> None:
    started = time.monotonic()
    with events.raw() as ws:
        error, closed = _refusal(ws)
    assert closed.code == 4001
    assert error["problem"]["close_code"] == 4001
    assert "no auth message within 0.5 s" in closed.reason
    assert 0.4 < time.monotonic() - started < 5
    (refused,) = _audit_rows(events, "events.connect")
    assert refused["outcome"] == "denied"
    assert "no auth message" in refused["detail"]


def test_the_socket_closes_when_its_token_expires(events: Events) -> None:
    # JWT times are whole seconds: 3 s after a whole second leaves 2-3 s to sign in on a loaded machine.
    now = int(time.time())
    claims = {
        "sub": "sono1",
        "role": "sonographer",
        "iat": now,
        "exp": now + 3,
        "aud": "teleconsult",
        "typ": "access",
    }
    token = jwt.encode(claims, _key(events), algorithm="HS256")
    with events.raw() as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json() == {"type": "ready"}
        error, closed = _refusal(ws)
    assert closed.code == 4001
    assert "token expired" in closed.reason
    assert error["problem"]["code"] == "unauthenticated"
    assert time.time() >= jwt.decode(token, options={"verify_signature": False})["exp"]


def test_a_disabled_account_stops_receiving(events: Events) -> None:
    with events.connect("sono1") as socket:
        IdentityStore(events.consulting.api.store.index.engine).set_disabled("sono1", True)
        # The hub re-reads accounts every 0.3 s (OPTIONS); before that the study might still arrive.
        events.consulting.store_study("TOWN01")
        messages, closed = _until_closed(socket.ws)
    assert closed.code == 4001
    assert "disabled" in closed.reason
    assert messages[-1]["type"] == "error"
    assert [m["type"] for m in messages[:-1]] in ([], ["study.stored"])


def test_an_unknown_message_after_ready_closes_with_4000(events: Events) -> None:
    with events.connect("sono1") as socket:
        socket.ws.send_json({"type": "subscribe", "topic": "everything"})
        error, closed = _refusal(socket.ws)
    assert closed.code == CloseCode.INVALID_MESSAGE == 4000
    assert error["problem"]["code"] == "invalid-message"
    assert "unknown message type 'subscribe'" in closed.reason


def test_tokens_stay_out_of_the_logs(events: Events, caplog: pytest.LogCaptureFixture) -> None:
    good = events.token("specialist")
    bad = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with caplog.at_level(logging.DEBUG):
        with events.raw() as ws:
            ws.send_json({"type": "auth", "token": bad})
            _refusal(ws)
        with events.connect("specialist"):
            pass
    # Both attempts were logged (so the assertions below look at something) ...
    assert "events socket from testclient refused: the bearer token is invalid" in caplog.text
    assert "opened by specialist of COUNTY" in caplog.text
    # ... and no token, nor part of one, is in those lines.
    assert good not in caplog.text
    assert bad not in caplog.text
    assert good.split(".")[2] not in caplog.text  # not even the signature part


def test_a_plain_get_is_told_to_upgrade(events: Events) -> None:
    response = events.consulting.api.client.get("/api/events")  # type: ignore[attr-defined]
    assert response.status_code == 426
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["upgrade"] == "websocket"
    assert response.json()["code"] == "upgrade-required"
    document = events.consulting.api.client.get("/openapi.json").json()  # type: ignore[attr-defined]
    described = document["paths"]["/api/events"]["get"]["description"]
    assert '{"type": "auth", "token"' in described
    assert "4013" in described


def test_an_unreadable_index_closes_with_1011(events: Events, monkeypatch: pytest.MonkeyPatch) -> None:
    import teleconsult.api.routes.events as route

    def unavailable(*_args: object) -> None:
        raise IndexUnavailableError("the index cannot be read (OperationalError); retry later")

    monkeypatch.setattr(route, "principal_from_token", unavailable)
    token = events.token("sono1")
    with events.raw() as ws:
        ws.send_json({"type": "auth", "token": token})
        error, closed = _refusal(ws)
    assert closed.code == 1011
    assert error["problem"]["code"] == "index-unavailable"
    assert error["problem"]["status"] == 503


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://testserver.evil.example", "ftp://testserver"]
)
def test_a_page_of_another_site_is_refused_at_the_handshake(events: Events, origin: str) -> None:
    client = events.consulting.api.client
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/api/events", headers={"origin": origin}),  # type: ignore[attr-defined]
    ):
        pass
    assert refused.value.code == 1008
    (row,) = _audit_rows(events, "events.connect")
    assert (row["actor"], row["outcome"], row["resource"]) == ("anonymous", "denied", "WEBSOCKET /api/events")
    assert origin in row["detail"]


@pytest.mark.parametrize("origin", [None, "http://testserver", "HTTP://TestServer/"])
def test_the_servers_own_pages_and_clients_without_origin_are_let_in(
    events: Events, origin: str | None
) -> None:
    token = events.token("sono1")
    headers = {"origin": origin} if origin else {}
    with events.consulting.api.client.websocket_connect("/api/events", headers=headers) as ws:  # type: ignore[attr-defined]
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json() == {"type": "ready"}


def test_configured_origins_are_let_in() -> None:
    from teleconsult.api.sockets import origin_allowed

    allowed = ["https://viewer.county.example/"]
    assert origin_allowed("https://viewer.county.example", "teleconsult:8000", allowed)
    assert not origin_allowed("https://viewer.county.example.evil", "teleconsult:8000", allowed)
    assert not origin_allowed("https://elsewhere.example", "teleconsult:8000", allowed)
    assert origin_allowed("https://elsewhere.example", "teleconsult:8000", ["*"])
    assert not origin_allowed("https://teleconsult.example", None, [])
