"""Twenty sessions opened, used, recorded and ended leave no task, thread or peer connection behind."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
from collections import Counter

import pytest
from aiortc import RTCPeerConnection

from teleconsult.config import Settings
from teleconsult.media import MediaOptions
from teleconsult.media.recording import RecordingStatus, list_recordings
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

SESSIONS = 20


@pytest.fixture
def media_options(app_settings: Settings) -> MediaOptions:
    """Recorded, as by default: each session's recorder (thread, tasks, mix) must go with it."""
    return dataclasses.replace(OPTIONS, recordings_dir=app_settings.recordings_dir, record=True)


async def _one(served: Served) -> None:
    session = (
        await served.acall("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
    ).json()
    sender = await join(served, "sono1", session["id"], "sender")
    viewer = await join(served, "specialist", session["id"], "viewer")
    await frame_where(await viewer.track("video"), looks_like(RED))
    ended = await served.acall("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
    assert ended.json()["status"] == "ended"
    for participant in (sender, viewer):
        assert await close_code(participant.ws) == 1000
        await participant.pc.close()


def _server_tasks() -> list[str]:
    """The server loop's tasks but the one asking (``Served.on_server`` runs this in a task)."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())


def _threads() -> list[str]:
    """Threads but those that come and go with load (aiortc's decoders are counted).

    Those are the pools' workers and the DICOM gateway's pacing thread, which runs
    while an association of any earlier test is busy and then ends by itself.
    """
    pools = ("asyncio_", "uvloop_", "AnyIO worker thread", "ThreadPoolExecutor", "dicom-reactor-pacing")
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith(pools))


def _added(before: list[str], now: list[str]) -> list[str]:
    """Names in ``now`` beyond those of ``before`` (counted: two threads may share a name)."""
    return sorted((Counter(now) - Counter(before)).elements())


def test_twenty_sessions_leave_nothing_behind(served: Served) -> None:
    async def scenario() -> None:
        await _one(served)  # warm up: thread pools, codecs, the HTTP connection
        tasks = served.on_server(_server_tasks)
        threads = _threads()
        assert not [name for name in threads if name.endswith("-decoder")]
        for _ in range(SESSIONS):
            await _one(served)
        # Only what was added counts: a thread of an earlier test that ends
        # meanwhile is no leak of these sessions.
        leftovers: list[str] = []
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    leftovers = _added(tasks, served.on_server(_server_tasks)) + _added(threads, _threads())
                    if not leftovers:
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"still there {WAIT} s after the last session ended: {leftovers}")
        assert served.on_server(served.hub.peer_connections) == 0
        assert served.on_server(served.hub.running) == []
        recordings = list_recordings(served.store.settings.recordings_dir, served.consult_id)
        assert [r.status for r in recordings] == [RecordingStatus.COMPLETE] * (SESSIONS + 1)
        await asyncio.sleep(0)  # the client loop's own tasks (aiortc timers) finish with their pcs
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(scenario())
    gc.collect()
    assert [pc for pc in gc.get_objects() if isinstance(pc, RTCPeerConnection)] == []
