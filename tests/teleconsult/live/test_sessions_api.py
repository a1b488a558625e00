"""Live sessions over REST and the signalling socket's refusals: who may do what, and the audit trail."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from teleconsult.audit import AuditLog
from teleconsult.media import MediaOptions
from tests.teleconsult.live.conftest import (
    OPTIONS,
    RED,
    WAIT,
    Served,
    close_code,
    drain,
    frame_where,
    join,
    looks_like,
)


def _audit(served: Served, action: str) -> list[dict[str, Any]]:
    rows = AuditLog(served.store.index.engine).query(limit=500)
    return [row for row in rows if row["action"] == action]


def test_start_read_and_end(served: Served) -> None:
    created = served.call("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["consult_id"] == served.consult_id
    assert (session["status"], session["started_by"], session["sender"]) == ("waiting", "sono1", None)
    assert session["ice_servers"] == []
    assert session["signal_path"] == f"/api/live-sessions/{session['id']}/signal"
    # the other side asking answers the running session
    again = served.call("POST", "specialist", "/api/live-sessions", {"consult_id": served.consult_id})
    assert again.status_code == 200
    assert again.json()["id"] == session["id"]
    read = served.call("GET", "specialist", f"/api/live-sessions/{session['id']}")
    assert read.status_code == 200
    assert read.json()["status"] == "waiting"
    ended = served.call("POST", "specialist", f"/api/live-sessions/{session['id']}/end")
    assert ended.status_code == 200
    assert (ended.json()["status"], ended.json()["end_reason"]) == ("ended", "ended by specialist")
    assert ended.json()["ended_at"] is not None
    # ending again answers the ended session; a new start makes a new one
    assert served.call("POST", "sono1", f"/api/live-sessions/{session['id']}/end").json()["status"] == "ended"
    fresh = served.call("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
    assert fresh.status_code == 201
    assert fresh.json()["id"] != session["id"]
    rows = _audit(served, "live.start")
    assert [(r["actor"], r["outcome"]) for r in rows] == [
        ("sono1", "success"),
        ("specialist", "success"),
        ("sono1", "success"),
    ][::-1]
    assert all(r["study_instance_uid"] == served.study.StudyInstanceUID for r in rows)
    assert all(r["patient_id"] == "P0001" for r in rows)
    assert [r["actor"] for r in _audit(served, "live.end")] == ["sono1", "specialist"]


def test_the_running_session_of_a_consult_is_found_without_starting_one(served: Served) -> None:
    running = f"/api/live-sessions?consult_id={served.consult_id}"
    assert served.call("GET", "specialist", running).json() == []
    session = served.start_session()
    for user in ("specialist", "sono1"):
        found = served.call("GET", user, running)
        assert found.status_code == 200, found.text
        assert [(s["id"], s["status"]) for s in found.json()] == [(session["id"], "waiting")]
    assert served.call("GET", "sono2", running).status_code == 404, "a consult the caller cannot see"
    assert served.call("GET", "specialist", "/api/live-sessions?consult_id=nope").status_code == 404
    assert served.call("GET", "specialist", "/api/live-sessions").status_code == 422
    served.call("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
    assert served.call("GET", "specialist", running).json() == [], "an ended session is not running"
    reads = _audit(served, "live.read")
    assert {(r["actor"], r["outcome"]) for r in reads} == {
        ("specialist", "success"),
        ("sono1", "success"),
        ("sono2", "denied"),
        ("specialist", "failure"),  # the consult that does not exist
    }
    assert all(
        r["study_instance_uid"] == served.study.StudyInstanceUID for r in reads if r["outcome"] == "success"
    )


def test_a_user_of_another_township_gets_404_everywhere(served: Served) -> None:
    session = served.start_session()
    base = f"/api/live-sessions/{session['id']}"
    for method, path, body in (
        ("POST", "/api/live-sessions", {"consult_id": served.consult_id}),
        ("GET", base, None),
        ("POST", f"{base}/end", None),
        ("POST", f"{base}/snapshot", None),
    ):
        response = served.call(method, "sono2", path, body)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        if path != "/api/live-sessions":  # a session's answer does not betray its consult
            assert served.consult_id not in response.json()["detail"]
    # exactly as for a session that does not exist
    unknown = served.call("GET", "sono2", "/api/live-sessions/7a0c1d6e-0000-4000-8000-000000000000")
    hidden = served.call("GET", "sono2", base)
    assert unknown.json()["code"] == hidden.json()["code"] == "not-found"
    denied = [r for r in AuditLog(served.store.index.engine).query(actor="sono2") if r["outcome"] == "denied"]
    assert {r["action"] for r in denied} == {"live.start", "live.read", "live.end", "live.snapshot"}
    # Untouched by sono2: still waiting, unless this module's 0.6 s idle timer ended it on a slow machine.
    state = served.call("GET", "sono1", base).json()
    assert (state["status"], state["end_reason"]) == ("waiting", None) or state["end_reason"].startswith(
        "no sender was connected"
    ), state


def test_admins_take_no_part_and_closed_consults_have_no_live_exam(served: Served) -> None:
    response = served.call("POST", "admin", "/api/live-sessions", {"consult_id": served.consult_id})
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    unknown = served.call("POST", "sono1", "/api/live-sessions", {"consult_id": "not-a-consult"})
    assert unknown.status_code == 404
    cancelled = served.call(
        "POST", "sono1", f"/api/consults/{served.consult_id}/cancel", {"reason": "patient left"}
    )
    assert cancelled.status_code == 200, cancelled.text
    response = served.call("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
    assert (response.status_code, response.json()["code"]) == (409, "consult-state")


def test_a_plain_get_on_the_signalling_path_is_told_to_upgrade(served: Served) -> None:
    session = served.start_session()
    response = served.call("GET", None, f"/api/live-sessions/{session['id']}/signal")
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.json()["code"] == "upgrade-required"
    document = served.call("GET", None, "/openapi.json").json()
    operation = document["paths"]["/api/live-sessions/{session_id}/signal"]["get"]
    assert '{"type": "offer"' in operation["description"]
    assert "4009" in operation["description"]


def test_the_signalling_socket_refuses_with_close_codes(served: Served) -> None:
    session = served.start_session()
    url = served.signal_url(session["id"])

    async def refusal(user: str | None, target: str = url) -> tuple[dict[str, Any], int | None]:
        token = await asyncio.to_thread(served.token, user) if user else "forged.token.value"
        async with connect(target, open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            error = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            return error, await close_code(ws)

    async def scenario() -> None:
        error, code = await refusal(None)
        assert (error["problem"]["code"], code) == ("unauthenticated", 4001)
        error, code = await refusal("sono2")
        assert (error["problem"]["code"], code) == ("not-found", 4004)
        assert served.consult_id not in error["problem"]["detail"]
        error, code = await refusal("sono1", served.signal_url("7a0c1d6e-0000-4000-8000-000000000000"))
        assert (error["problem"]["code"], code) == ("not-found", 4004)
        error, code = await refusal("admin")
        assert (error["problem"]["code"], code) == ("forbidden", 4003)
        await served.acall("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
        error, code = await refusal("specialist")
        assert (error["problem"]["code"], code) == ("session-ended", 4010)
        assert error["problem"]["instance"] == f"/api/live-sessions/{session['id']}/signal"

    asyncio.run(scenario())
    refused = _audit(served, "live.connect")
    assert {(r["actor"], r["outcome"]) for r in refused} == {
        ("anonymous", "denied"),
        ("sono2", "denied"),
        ("sono1", "failure"),
        ("admin", "denied"),
        ("specialist", "denied"),
    }


def test_a_page_of_another_site_cannot_open_the_signalling_socket(served: Served) -> None:
    session = served.start_session()
    url = served.signal_url(session["id"])

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="https://evil.example", open_timeout=WAIT)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        own = "http://" + url.split("/")[2]  # the server's own origin: the web client's pages
        async with connect(url, origin=own, open_timeout=WAIT) as ws:  # type: ignore[arg-type]
            await ws.send(
                json.dumps({"type": "auth", "token": await asyncio.to_thread(served.token, "sono1")})
            )
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "ready"}

    asyncio.run(scenario())
    (refused,) = [r for r in _audit(served, "live.connect") if r["outcome"] == "denied"]
    assert refused["actor"] == "anonymous"
    assert "https://evil.example" in refused["detail"]


def test_ending_closes_every_connection_and_task(served: Served) -> None:
    session = served.start_session()
    sid = session["id"]

    async def scenario() -> None:
        sender = await join(served, "sono1", sid, "sender")
        viewer = await join(served, "specialist", sid, "viewer")
        video = await viewer.track("video")
        await frame_where(video, looks_like(RED))
        assert served.on_server(served.hub.peer_connections) == 2
        ended = await served.acall("POST", "specialist", f"/api/live-sessions/{sid}/end")
        assert ended.status_code == 200
        for participant in (sender, viewer):
            bye = await participant.message()
            assert bye == {"type": "bye", "reason": f"live session {sid} ended: ended by specialist"}
            assert await close_code(participant.ws) == 1000
        await asyncio.wait_for(drain(video), WAIT)  # the server stopped sending: the track ends
        await sender.pc.close()
        await viewer.pc.close()

    asyncio.run(scenario())

    def leftovers() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if sid in t.get_name() or "live" in t.get_name()]

    assert served.on_server(served.hub.peer_connections) == 0
    assert served.on_server(served.hub.running) == []
    assert [name for name in served.on_server(leftovers) if name != "live sessions watchdog"] == []
    joins = _audit(served, "live.join")
    assert {(r["actor"], r["outcome"]) for r in joins} == {("sono1", "success"), ("specialist", "success")}
    assert all(sid in r["detail"] for r in joins)
    assert {r["actor"] for r in _audit(served, "live.leave")} == {"sono1", "specialist"}


def test_a_viewer_offering_as_sender_is_audited_as_denied(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        viewer = await join(served, "specialist", session["id"], "viewer")
        await viewer.send({"type": "offer", "sdp": viewer.pc.localDescription.sdp, "role": "sender"})
        assert (await viewer.message())["problem"]["code"] == "forbidden"
        await viewer.close()

    asyncio.run(scenario())
    rows = _audit(served, "live.join")
    assert [(r["actor"], r["outcome"]) for r in rows] == [("specialist", "denied"), ("specialist", "success")]
    assert "as sender" in rows[0]["detail"]


@pytest.fixture
def media_options() -> MediaOptions:
    return MediaOptions(
        idle_timeout=0.6,
        max_seconds=OPTIONS.max_seconds,
        max_viewers=OPTIONS.max_viewers,
        auth_timeout=OPTIONS.auth_timeout,
        check_interval=0.1,
    )


def test_a_session_without_a_sender_ends_on_its_own(served: Served) -> None:
    """Here the idle timeout is 0.6 s: no sender at all, then a sender that leaves."""
    never = served.start_session()

    async def scenario() -> None:
        async with asyncio.timeout(WAIT):
            while (await served.acall("GET", "sono1", f"/api/live-sessions/{never['id']}")).json()[
                "status"
            ] != "ended":
                await asyncio.sleep(0.1)
        session = await asyncio.to_thread(served.start_session)
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        await asyncio.sleep(1.0)  # longer than the idle timeout: a connected sender keeps it going
        state = (await served.acall("GET", "sono1", f"/api/live-sessions/{session['id']}")).json()
        assert state["status"] == "live"
        await sender.send({"type": "bye"})
        assert await close_code(sender.ws) == 1000
        assert (await viewer.message())["type"] == "bye"  # the session ended on its own
        await sender.pc.close()
        await viewer.close()

    asyncio.run(scenario())
    state = served.call("GET", "sono1", f"/api/live-sessions/{never['id']}").json()
    assert state["end_reason"] == "no sender was connected for 0.6 s"
    system = [r for r in _audit(served, "live.end") if r["actor"] == "system"]
    assert len(system) == 2
    assert all(r["patient_id"] == "P0001" for r in system)
