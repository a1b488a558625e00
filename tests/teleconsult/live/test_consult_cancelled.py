"""A consult cancelled during its live exam ends the exam: everyone is told why, and it is audited."""

from __future__ import annotations

import asyncio
import json

from teleconsult.audit import AuditLog
from tests.teleconsult.live.conftest import WAIT, Served, close_code, join, start_watched_session


def test_cancelling_the_consult_ends_its_running_session(served: Served) -> None:
    async def scenario() -> None:
        session_id, sender, viewer = await start_watched_session(served)
        third = await join(served, "specialist2", session_id, "viewer")
        cancelled = await served.acall(
            "POST", "sono1", f"/api/consults/{served.consult_id}/cancel", {"reason": "患者已离开"}
        )
        assert cancelled.status_code == 200, cancelled.text
        for participant in (sender, viewer, third):
            bye = json.loads(await asyncio.wait_for(participant.ws.recv(), WAIT))
            while bye["type"] != "bye":
                bye = json.loads(await asyncio.wait_for(participant.ws.recv(), WAIT))
            assert bye["reason"].endswith("the consult was cancelled by sono1"), bye
            assert await close_code(participant.ws) == 1000
            await participant.pc.close()
        state = (await served.acall("GET", "sono1", f"/api/live-sessions/{session_id}")).json()
        assert (state["status"], state["end_reason"]) == ("ended", "the consult was cancelled by sono1")
        assert served.on_server(served.hub.peer_connections) == 0
        again = await served.acall("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
        assert again.status_code == 409  # a cancelled consult has no live exam

    asyncio.run(scenario())
    ends = [r for r in AuditLog(served.store.index.engine).query(limit=1000) if r["action"] == "live.end"]
    assert [(r["actor"], r["outcome"]) for r in ends] == [("system", "success")]
    assert "cancelled by sono1" in ends[0]["detail"]
