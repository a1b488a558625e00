"""/api/events over a real uvicorn on loopback: the protocol on the wire, and a slow client cut off.

A client that stops reading fills its socket buffers, then its queue; it is
closed with 4013 while a client reading at full speed on the same server
gets every event.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from teleconsult.api.app import create_app
from teleconsult.config import Settings
from teleconsult.events import Event
from teleconsult.notifications import NotificationHub, NotificationOptions
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS
from tests.uvicorn_thread import serving

QUEUE_SIZE = 16


@dataclass
class Served:
    store: InstanceStore
    hub: NotificationHub
    port: int

    def token(self, user: str) -> str:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/api/auth/token",
            data={"username": user, "password": PASSWORD},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    @contextmanager
    def open(
        self, user: str, sock: socket.socket | None = None, **options: Any
    ) -> Iterator[ClientConnection]:
        url = f"ws://127.0.0.1:{self.port}/api/events"
        token = self.token(user)  # before the socket opens: signing in may outlast the auth deadline
        with connect(url, sock=sock, open_timeout=10, **options) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
            yield ws


@pytest.fixture
def served(app_settings: Settings, store: InstanceStore) -> Iterator[Served]:
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    app = create_app(app_settings, store)
    app.state.notification_options = NotificationOptions(queue_size=QUEUE_SIZE, close_grace=10.0)
    with serving(app) as port:
        yield Served(store, app.state.notifications, port)


def test_ready_ping_and_a_study_over_the_wire(served: Served) -> None:
    with served.open("sono1") as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
        served.store.bus.publish(
            Event(
                type="instance.stored", data={"study_instance_uid": "1.2.9", "source_organisation": "TOWN01"}
            )
        )
        event = json.loads(ws.recv(timeout=10))
    assert (event["type"], event["data"]["study_instance_uid"]) == ("study.stored", "1.2.9")


def test_a_bad_token_is_closed_with_4001_on_the_wire(served: Served) -> None:
    with connect(f"ws://127.0.0.1:{served.port}/api/events", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": "forged"}))
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert error["problem"]["code"] == "unauthenticated"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4001


def _slow_socket(port: int) -> socket.socket:
    """A connected socket with the smallest receive buffer: a client that reads nothing fills it at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_all(ws: ClientConnection, count: int, into: list[str]) -> None:
    while len(into) < count:
        try:
            message = json.loads(ws.recv(timeout=30))
        except (TimeoutError, ConnectionClosed):
            return
        into.append(message["data"]["study_instance_uid"])


def _until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    messages = []
    while True:
        try:
            messages.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed as closed:
            return messages, closed


def test_a_client_that_stops_reading_is_closed_and_the_others_get_everything(served: Served) -> None:
    # Large events that do not compress (permessage-deflate is on), so that they outgrow the
    # kernel's socket buffers (up to 4 MiB on loopback).
    total = 800
    received: list[str] = []
    with (
        served.open("specialist", max_queue=None) as fast,
        served.open("specialist", sock=_slow_socket(served.port), max_queue=1) as slow,
    ):
        reader = threading.Thread(target=_read_all, args=(fast, total, received))
        reader.start()
        for i in range(total):
            served.store.bus.publish(
                Event(
                    type="alert.critical",
                    data={
                        "study_instance_uid": f"1.2.826.0.1.{i}",
                        "source_organisation": "TOWN02",
                        "reason": "synthetic",
                        "measurements": {"samples": base64.b64encode(os.urandom(12288)).decode()},
                    },
                )
            )
        reader.join(60)
        # The reading client got all of them, in order ...
        assert received == [f"1.2.826.0.1.{i}" for i in range(total)]
        # ... while the one that read nothing was marked for closing as too slow.
        deadline = time.monotonic() + 10
        while not any(c.closing for c in served.hub.connections()) and time.monotonic() < deadline:
            time.sleep(0.05)
        closing = [c.closing for c in served.hub.connections() if c.closing is not None]
        assert [c.slug for c in closing] == ["slow-consumer"]

        # It now reads what was already in its buffers, then the error and the close.
        messages, closed = _until_closed(slow)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 4013
        error = messages[-1]
        assert error["type"] == "error"
        assert error["problem"]["code"] == "slow-consumer"
        events = messages[:-1]
        assert 0 < len(events) < total
        assert [e["data"]["study_instance_uid"] for e in events] == received[: len(events)]
    deadline = time.monotonic() + 10
    while served.hub.connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.hub.connections() == []
    assert served.hub.stats.closed == {"slow-consumer": 1}
