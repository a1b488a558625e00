"""TURN credentials issued per live session and participant (coturn's use-auth-secret scheme).

The credential is checked against HMAC-SHA1 computed by other implementations
(the ``cryptography`` package's, and OpenSSL's command line, which is what
coturn computes it with), and against coturn's own acceptance rule (the
username's first field is an expiry in Unix time, not yet past).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import shutil
import subprocess
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from pydantic import SecretStr, ValidationError

from teleconsult.audit import AuditLog
from teleconsult.config import IceServer, Settings
from teleconsult.media import MediaOptions, TurnIssuer, turn_credential
from tests.teleconsult.live.conftest import OPTIONS, Served

SECRET = "turn-shared-secret-0123456789abcdef"
URLS = ("turn:turn.county.example:3478?transport=udp", "turns:turn.county.example:5349?transport=tcp")
STUN = IceServer(urls=["stun:stun.county.example:3478"])


def _hmac_sha1_base64(secret: str, message: str) -> str:
    mac = HMAC(secret.encode(), hashes.SHA1())  # the TURN REST API's MAC
    mac.update(message.encode())
    return base64.b64encode(mac.finalize()).decode()


def _coturn_accepts(username: str, credential: str, secret: str, now: float) -> bool:
    """What coturn's use-auth-secret checks: the timestamp before the first ':' is not past, the MAC."""
    timestamp = username.split(":", 1)[0]
    if not timestamp.isdigit() or int(timestamp) < int(now):
        return False
    return credential == _hmac_sha1_base64(secret, username)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_credential_is_hmac_sha1_of_the_username_as_openssl_computes_it() -> None:
    username = "1764000000:3b0d3c4e-8f0a-4d1e-9a51-6c1f5d2e7a90:sono1"
    credential = turn_credential(SECRET, username)
    assert credential == _hmac_sha1_base64(SECRET, username)
    assert len(base64.b64decode(credential)) == 20  # SHA-1
    openssl = shutil.which("openssl")
    if openssl is not None:
        digest = subprocess.run(
            [openssl, "dgst", "-sha1", "-hmac", SECRET, "-binary"],
            input=username.encode(),
            capture_output=True,
            check=True,
        ).stdout
        assert credential == base64.b64encode(digest).decode()


def test_credentials_expire_and_differ_per_participant_and_session() -> None:
    clock = Clock(1_764_000_000.7)
    issuer = TurnIssuer(URLS, SecretStr(SECRET), ttl_seconds=3600, clock=clock)
    sono = issuer.issue("session-1", "sono1")
    assert sono.urls == list(URLS)
    assert sono.username == "1764003600:session-1:sono1"
    assert sono.credential is not None
    assert _coturn_accepts(sono.username, sono.credential, SECRET, clock.now)
    assert _coturn_accepts(sono.username, sono.credential, SECRET, clock.now + 3599)
    assert not _coturn_accepts(sono.username, sono.credential, SECRET, clock.now + 3601), "expired"
    assert not _coturn_accepts(sono.username, sono.credential, "another-secret-0123456789", clock.now)

    others = [
        issuer.issue("session-1", "specialist"),
        issuer.issue("session-2", "sono1"),
        issuer.issue("session-1"),  # the server itself
    ]
    assert others[2].username == "1764003600:session-1"
    names = {sono.username, *(o.username for o in others)}
    credentials = {sono.credential, *(o.credential for o in others)}
    assert len(names) == len(credentials) == 4
    for other in others:
        assert other.credential is not None
        assert _coturn_accepts(other.username or "", other.credential, SECRET, clock.now)
    # later: a later expiry, hence another credential
    clock.now += 60
    assert issuer.issue("session-1", "sono1").username == "1764003660:session-1:sono1"


def test_settings_make_the_issuer_and_keep_the_secret_out_of_reprs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELECONSULT_TURN_URLS", json.dumps(list(URLS)))
    monkeypatch.setenv("TELECONSULT_TURN_SECRET", SECRET)
    monkeypatch.setenv("TELECONSULT_TURN_TTL_SECONDS", "20000")
    settings = Settings()
    options = MediaOptions.from_settings(settings)
    assert options.turn is not None
    assert (options.turn.urls, options.turn.ttl_seconds, options.turn.for_server) == (URLS, 20000, False)
    for text in (repr(settings), str(settings), repr(options), repr(options.turn)):
        assert SECRET not in text
    assert MediaOptions.from_settings(Settings(turn_urls=[], turn_secret=None)).turn is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"turn_urls": list(URLS)}, "TELECONSULT_TURN_URLS is set but TELECONSULT_TURN_SECRET is not"),
        ({"turn_secret": SECRET}, "TELECONSULT_TURN_SECRET is set but TELECONSULT_TURN_URLS is not"),
        ({"turn_urls": ["stun:a:3478"], "turn_secret": SECRET}, "must start with turn: or turns:"),
        ({"turn_urls": list(URLS), "turn_secret": "short"}, "at least 16 characters"),
        (
            {"turn_urls": list(URLS), "turn_secret": SECRET, "turn_ttl_seconds": 3600},
            "TELECONSULT_TURN_TTL_SECONDS \\(3600\\) is shorter than TELECONSULT_LIVE_MAX_SECONDS",
        ),
        ({"turn_for_server": True}, "TELECONSULT_TURN_FOR_SERVER needs"),
    ],
)
def test_inconsistent_turn_settings_are_refused_without_echoing_the_secret(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        Settings(**values)
    assert SECRET not in str(raised.value)
    assert "short" not in str(raised.value).replace("shorter", "")


# -- over the API: each caller gets its own, next to TELECONSULT_ICE_SERVERS ------------------------

CLOCK = Clock(1_764_000_000.0)


@pytest.fixture
def media_options() -> MediaOptions:
    turn = TurnIssuer(URLS, SecretStr(SECRET), ttl_seconds=int(OPTIONS.max_seconds), clock=CLOCK)
    return dataclasses.replace(OPTIONS, ice_servers=(STUN,), turn=turn)


def _turn_entry(session: dict[str, Any]) -> dict[str, Any]:
    servers = session["ice_servers"]
    assert servers[1:] == [{"urls": STUN.urls, "username": None, "credential": None}], "the rest, as set"
    assert servers[0]["urls"] == list(URLS)
    return servers[0]  # type: ignore[no-any-return]


def test_the_session_answer_carries_credentials_of_the_callers_own(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = served.start_session("sono1")
    expiry = int(CLOCK.now) + int(OPTIONS.max_seconds)
    sono = _turn_entry(started)
    assert sono["username"] == f"{expiry}:{started['id']}:sono1"
    assert _coturn_accepts(sono["username"], sono["credential"], SECRET, CLOCK.now)

    read = served.call("GET", "specialist", f"/api/live-sessions/{started['id']}")
    specialist = _turn_entry(read.json())
    assert specialist["username"] == f"{expiry}:{started['id']}:specialist"
    assert _coturn_accepts(specialist["username"], specialist["credential"], SECRET, CLOCK.now)
    assert specialist["credential"] != sono["credential"]

    running = served.call("GET", "specialist2", f"/api/live-sessions?consult_id={served.consult_id}")
    assert _turn_entry(running.json()[0])["username"].endswith(":specialist2")
    joined = served.call("POST", "specialist", "/api/live-sessions", {"consult_id": served.consult_id})
    assert joined.status_code == 200
    assert _turn_entry(joined.json())["username"].endswith(":specialist")

    # admins take no part: no relay for them; nor for anyone once the session has ended
    admin = served.call("GET", "admin", f"/api/live-sessions/{started['id']}").json()
    assert admin["ice_servers"] == [{"urls": STUN.urls, "username": None, "credential": None}]
    ended = served.call("POST", "sono1", f"/api/live-sessions/{started['id']}/end").json()
    assert ended["ice_servers"] == admin["ice_servers"]

    issued = [sono["credential"], specialist["credential"]]
    audit = json.dumps(AuditLog(served.store.index.engine).query(limit=500), default=str)
    assert "live.start" in audit
    for secret in (SECRET, *issued):
        assert secret not in caplog.text
        assert secret not in audit


def test_the_servers_own_peer_connections_relay_only_when_asked(served: Served) -> None:
    session_id = served.start_session()["id"]

    def server_servers() -> tuple[IceServer, ...]:
        session = served.hub.get(session_id)
        assert session is not None
        return session.server_ice_servers()

    assert served.on_server(server_servers) == (STUN,), "by default the server offers host candidates"
    session = served.hub.get(session_id)
    assert session is not None
    assert session.turn is not None
    session.turn = dataclasses.replace(session.turn, for_server=True)
    own, stun = served.on_server(server_servers)
    assert stun == STUN
    expiry = int(CLOCK.now) + int(OPTIONS.max_seconds)
    assert own.username == f"{expiry}:{session_id}"  # no participant's: theirs have a third field
    assert own.credential is not None
    assert _coturn_accepts(own.username, own.credential, SECRET, CLOCK.now)
