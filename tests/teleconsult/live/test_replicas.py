"""Two HTTP replicas on one index behave as one server for live exams.

Replica A and replica B are two apps, each served by its own uvicorn on
loopback with its own data directory and media hub, sharing the index
(SQLite here, PostgreSQL with TELECONSULT_TEST_DATABASE_URL) and the secret
key, each told its own address (TELECONSULT_REPLICA_URL). The sonographer
starts and sends on A; the specialist only ever talks to B: B finds the
session in the registry and relays the REST calls and the signalling socket
to A, where the media are. A replica that stopped answering, or died
without ending its sessions, is handled too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from teleconsult.api.app import create_app
from teleconsult.api.live_relay import RELAYED_HEADER
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.media import MediaOptions
from teleconsult.media.registry import Holder, SessionRegistry
from teleconsult.storage.store import InstanceStore
from tests.conftest import RecordingBus
from tests.teleconsult.live.conftest import (
    OPTIONS,
    RED,
    WAIT,
    Served,
    close_code,
    frame_where,
    join,
    looks_like,
)
from tests.uvicorn_thread import serving

KEY = "replicas-share-this-secret-key-of-32-characters+"
LIVE = "/api/live-sessions"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ports() -> tuple[int, int]:
    return _free_port(), _free_port()


@pytest.fixture
def server_port(ports: tuple[int, int]) -> int:
    return ports[0]


def _replica_settings(make_settings: Any, data_dir: Path, port: int) -> Settings:
    settings: Settings = make_settings(
        data_dir=data_dir,
        consult_overdue_check_seconds=0,
        replica_url=f"http://127.0.0.1:{port}",
        secret_key=KEY,
    )
    return settings


@pytest.fixture
def app_settings(make_settings: Any, tmp_path: Path, ports: tuple[int, int]) -> Settings:
    return _replica_settings(make_settings, tmp_path / "a", ports[0])


@pytest.fixture
def media_options(app_settings: Settings) -> MediaOptions:
    return dataclasses.replace(OPTIONS, recordings_dir=app_settings.recordings_dir, record=True)


@pytest.fixture
def replica_b(served: Served, make_settings: Any, tmp_path: Path, ports: tuple[int, int]) -> Iterator[Served]:
    """Replica B: its own store object, data directory and hub, on the index replica A uses."""
    settings = _replica_settings(make_settings, tmp_path / "b", ports[1])
    store = InstanceStore(settings, RecordingBus())
    store.open()
    try:
        app = create_app(settings, store)
        app.state.media_options = dataclasses.replace(
            OPTIONS, recordings_dir=settings.recordings_dir, record=True
        )
        with serving(app, ports[1]) as port:
            yield Served(store, app.state.media, port, served.study, served.consult_id)
    finally:
        store.close()


def _registry(served: Served) -> SessionRegistry:
    return SessionRegistry(served.store.index.engine, served.base)


def test_the_specialist_on_the_other_replica_joins_captures_ends_and_downloads(
    served: Served, replica_b: Served
) -> None:
    a, b = served, replica_b
    consult = a.consult_id

    async def scenario() -> str:
        started = await a.acall("POST", "sono1", LIVE, {"consult_id": consult})
        assert started.status_code == 201, started.text
        session_id = str(started.json()["id"])
        listed = await b.acall("GET", "specialist", f"{LIVE}?consult_id={consult}")
        assert [item["id"] for item in listed.json()] == [session_id]
        again = await b.acall("POST", "specialist", LIVE, {"consult_id": consult})
        assert (again.status_code, again.json()["id"]) == (200, session_id)

        sender = await join(a, "sono1", session_id, "sender")
        viewer = await join(b, "specialist", session_id, "viewer")  # B's socket, relayed to A
        await frame_where(await viewer.track("video"), looks_like(RED))
        read = await b.acall("GET", "specialist", f"{LIVE}/{session_id}")
        assert (read.json()["status"], read.json()["sender"], read.json()["viewers"]) == (
            "live",
            "sono1",
            ["specialist"],
        )
        snapshot = await b.acall("POST", "specialist", f"{LIVE}/{session_id}/snapshot")
        assert snapshot.status_code == 201, snapshot.text
        assert b.hub.get(session_id) is None
        assert b.hub.running() == []

        ended = await b.acall("POST", "specialist", f"{LIVE}/{session_id}/end")
        assert ended.json()["status"] == "ended", ended.text
        for participant in (sender, viewer):
            assert await close_code(participant.ws) == 1000  # the holder's close, through B for the viewer
            await participant.pc.close()
        return session_id

    session_id = asyncio.run(scenario())
    registry = _registry(b)
    assert registry.running(consult) is None
    assert registry.holder(session_id) == Holder(session_id, a.base)

    # The recording is on A's disk; B lists it and serves it (relayed, Range and all).
    recordings = b.call("GET", "specialist", f"{LIVE}/recordings?consult_id={consult}").json()
    assert [item["session_id"] for item in recordings] == [session_id]
    whole = b.call("GET", "specialist", recordings[0]["download_path"])
    assert (whole.status_code, whole.headers["content-type"]) == (200, "video/mp4")
    on_disk = a.store.settings.recordings_dir / consult / f"{session_id}.mp4"
    assert whole.content == on_disk.read_bytes()
    part = b.call_with("GET", "specialist", recordings[0]["download_path"], {"Range": "bytes=0-99"})
    assert (part.status_code, part.content) == (206, whole.content[:100])

    # The holder audited the specialist's part, from the specialist's address (forwarded by B).
    rows = AuditLog(a.store.index.engine).query(limit=1000)
    joins = [r for r in rows if r["action"] == "live.join" and r["actor"] == "specialist"]
    assert [(r["outcome"], r["source_address"]) for r in joins] == [("success", "127.0.0.1")]
    snapshots = [r for r in rows if r["action"] == "live.snapshot"]
    assert [(r["actor"], r["outcome"]) for r in snapshots] == [("specialist", "success")]


def test_two_replicas_asked_at_once_start_one_session(served: Served, replica_b: Served) -> None:
    a, b = served, replica_b

    def ask(barrier: threading.Barrier, answers: dict[str, httpx.Response], name: str, user: str) -> None:
        replica = a if name == "a" else b
        replica.token(user)
        barrier.wait()
        answers[name] = replica.call("POST", user, LIVE, {"consult_id": a.consult_id})

    for round_ in range(3):
        barrier = threading.Barrier(2)
        answers: dict[str, httpx.Response] = {}
        threads = [
            threading.Thread(target=ask, args=(barrier, answers, "a", "sono1")),
            threading.Thread(target=ask, args=(barrier, answers, "b", "specialist")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        ids = {name: answer.json()["id"] for name, answer in answers.items()}
        assert ids["a"] == ids["b"], (round_, ids)
        assert sorted(answer.status_code for answer in answers.values()) == [200, 201], round_
        assert len(a.hub.running()) + len(b.hub.running()) == 1
        ended = a.call("POST", "sono1", f"{LIVE}/{ids['a']}/end")
        assert ended.json()["status"] == "ended", ended.text


def test_a_holder_that_does_not_answer_is_a_503_and_a_lapsed_one_is_replaced(
    served: Served, replica_b: Served
) -> None:
    gone = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    dead = SessionRegistry(served.store.index.engine, gone, lease_seconds=2.0)
    holder = dead.claim("0f4cf5d2-9a3e-4a8e-9a55-3d7b2f1c0001", served.consult_id)
    assert holder.replica_url == gone

    read = replica_b.call("GET", "specialist", f"{LIVE}/{holder.session_id}")
    assert read.status_code == 503
    assert read.headers["content-type"] == "application/problem+json"
    assert read.json()["code"] == "replica-unreachable"
    assert gone in read.json()["detail"]
    assert read.headers["Retry-After"]

    async def signal() -> int | None:
        ws = await connect(replica_b.signal_url(holder.session_id), open_timeout=WAIT)
        return await close_code(ws)

    assert asyncio.run(signal()) == 1013  # try again later

    # Its lease lapses (the replica died without ending it): the next start takes the consult.
    time.sleep(2.5)
    started = replica_b.call("POST", "specialist", LIVE, {"consult_id": served.consult_id})
    assert started.status_code == 201, started.text
    assert started.json()["id"] != holder.session_id
    assert _registry(replica_b).running(served.consult_id).replica_url == replica_b.base  # type: ignore[union-attr]
    # The old session ended with its replica: asking for it still names that replica.
    assert replica_b.call("GET", "specialist", f"{LIVE}/{holder.session_id}").status_code == 503
    replica_b.call("POST", "specialist", f"{LIVE}/{started.json()['id']}/end")


def test_a_relayed_request_is_never_relayed_again(served: Served, replica_b: Served) -> None:
    session_id = served.start_session()["id"]
    token = replica_b.token("specialist")
    headers = {RELAYED_HEADER: "http://127.0.0.1:1", "Authorization": f"Bearer {token}"}
    looped = httpx.get(f"{replica_b.base}{LIVE}/{session_id}", headers=headers, timeout=WAIT)
    assert looped.status_code == 404  # B answers for itself: it does not hold the session
    assert replica_b.call("GET", "specialist", f"{LIVE}/{session_id}").status_code == 200
    served.call("POST", "sono1", f"{LIVE}/{session_id}/end")


def test_the_holder_refuses_a_foreign_origin_through_the_relay(served: Served, replica_b: Served) -> None:
    session_id = served.start_session()["id"]

    async def foreign() -> int:
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                replica_b.signal_url(session_id),
                origin="https://evil.example",
                open_timeout=WAIT,  # type: ignore[arg-type]
            )
        return refused.value.response.status_code

    assert asyncio.run(foreign()) == 403
    served.call("POST", "sono1", f"{LIVE}/{session_id}/end")


def test_a_replica_that_restarts_ends_what_it_held(
    served: Served, make_settings: Any, tmp_path: Path, ports: tuple[int, int]
) -> None:
    """Sessions die with their process: a replica starting again ends its rows (others' stay)."""
    mine = SessionRegistry(served.store.index.engine, f"http://127.0.0.1:{ports[1]}")
    other = SessionRegistry(served.store.index.engine, "http://127.0.0.1:1")
    mine.claim("0f4cf5d2-9a3e-4a8e-9a55-3d7b2f1c0002", "consult-held-before-the-restart")
    other.claim("0f4cf5d2-9a3e-4a8e-9a55-3d7b2f1c0003", "consult-held-elsewhere")
    settings = _replica_settings(make_settings, tmp_path / "b", ports[1])
    store = InstanceStore(settings, RecordingBus())
    store.open()
    try:
        with serving(create_app(settings, store), ports[1]):
            assert mine.running("consult-held-before-the-restart") is None
            assert other.running("consult-held-elsewhere") is not None
            assert mine.replicas_of("consult-held-elsewhere") == ["http://127.0.0.1:1"]
    finally:
        store.close()
