"""The consult tests' community and clock, with the notification hub on short timers.

COUNTY > TOWN01, TOWN02 > VILLAGE21, and CITY apart (``cityspec`` sees none
of the county's studies unless a consult shares one). ``events`` opens
``/api/events`` sockets on the same app as ``consulting``'s REST calls, so
what a test does over REST (or stores through the store) is what the
sockets hear.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import WebSocketTestSession

from teleconsult.config import Settings
from teleconsult.notifications import NotificationOptions
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS, ApiClient
from tests.teleconsult.consults.conftest import (  # noqa: F401 - fixtures used here
    Consulting,
    _cheap_password_hashing,
    app_settings,
    clock,
    consulting,
)

# Short timers so that timeouts, re-checks and debounce windows pass within a test.
OPTIONS = NotificationOptions(auth_timeout=0.5, recheck_seconds=0.3, study_window=0.3, close_grace=2.0)

# Every test here talks over sockets: a hang is a failure, not a wait for the global timeout.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(app_settings: Settings, store: InstanceStore) -> Iterator[ApiClient]:  # noqa: F811
    """tests/conftest.py's ``api``, with ``OPTIONS`` set before the app starts (and with it the hub)."""
    from fastapi.testclient import TestClient

    from teleconsult.api.app import create_app
    from teleconsult.storage.identity import IdentityStore

    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    app = create_app(app_settings, store)
    app.state.notification_options = OPTIONS
    with TestClient(app) as client:
        yield ApiClient(client=client, store=store, settings=app_settings)


@dataclass
class Socket:
    """An authenticated ``/api/events`` socket."""

    ws: WebSocketTestSession

    def next(self) -> dict[str, Any]:
        message: dict[str, Any] = self.ws.receive_json()
        return message

    def next_of(self, event_type: str, limit: int = 20) -> dict[str, Any]:
        """The next event of ``event_type``, skipping (at most ``limit``) others."""
        for _ in range(limit):
            message = self.next()
            if message["type"] == event_type:
                return message
        raise AssertionError(f"no {event_type} among the next {limit} messages")


@dataclass
class Events:
    consulting: Consulting

    def token(self, user: str) -> str:
        return self.consulting.headers(user)["Authorization"].removeprefix("Bearer ")

    @contextmanager
    def raw(self) -> Iterator[WebSocketTestSession]:
        with self.consulting.api.client.websocket_connect("/api/events") as ws:  # type: ignore[attr-defined]
            yield ws

    @contextmanager
    def connect(self, user: str) -> Iterator[Socket]:
        # Signed in before the socket opens: signing in (argon2) may take longer than the
        # short auth deadline these tests run with.
        token = self.token(user)
        with self.raw() as ws:
            ws.send_json({"type": "auth", "token": token})
            assert ws.receive_json() == {"type": "ready"}
            yield Socket(ws)


@pytest.fixture
def events(consulting: Consulting) -> Events:  # noqa: F811
    return Events(consulting)
