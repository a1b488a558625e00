"""Twenty sessions opened, used, recorded and ended leave no task, thread or peer connection behind."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import weakref

import pytest
from aiortc import RTCPeerConnection

from teleconsult.config import Settings
from teleconsult.media import MediaOptions
from teleconsult.media.recording import RecordingStatus, SessionRecorder, list_recordings
from tests.teleconsult.live.conftest import (
    OPTIONS,
    WAIT,
    Served,
    close_code,
    end_session,
    one_clean_session,
    start_watched_session,
)
from tests.teleconsult.live.leaks import added, server_tasks, threads_but_pools

SESSIONS = 20


@pytest.fixture
def media_options(app_settings: Settings) -> MediaOptions:
    """Recorded, as by default: each session's recorder (thread, tasks, mix) must go with it."""
    return dataclasses.replace(OPTIONS, recordings_dir=app_settings.recordings_dir, record=True)


def test_twenty_sessions_leave_nothing_behind(served: Served) -> None:
    async def scenario() -> None:
        await one_clean_session(served)  # warm up: thread pools, codecs, the HTTP connection
        tasks = served.on_server(server_tasks)
        threads = threads_but_pools()
        assert not [name for name in threads if name.endswith("-decoder")]
        for _ in range(SESSIONS):
            await one_clean_session(served)
        # Only what was added counts: a thread of an earlier test that ends
        # meanwhile is no leak of these sessions.
        leftovers: list[str] = []
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    leftovers = added(tasks, served.on_server(server_tasks)) + added(
                        threads, threads_but_pools()
                    )
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
    # Ended sessions are remembered by the hub: their recorders (the last seconds of video) are not.
    assert [recorder for recorder in gc.get_objects() if isinstance(recorder, SessionRecorder)] == []


def _server_peer_connections(served: Served, session_id: str) -> list[weakref.ref[RTCPeerConnection]]:
    session = served.hub.get(session_id)
    assert session is not None
    return [weakref.ref(peer.pc) for peer in session.peers() if peer.pc is not None]


def test_an_ended_sessions_media_are_freed_without_waiting_for_pythons_own_collection(served: Served) -> None:
    """Peer connections and codecs sit in reference cycles; the hub collects them once a session ends.

    Python's own collector counts objects, not the native frames they hold, so
    it may not come round for a long time: the RSS of the churn test grew by
    tens of MiB before the hub collected. With the automatic collector off, the
    objects of an ended session must still be gone shortly after its end.
    """

    async def scenario() -> None:
        await one_clean_session(served)  # warm-up
        gc.collect()
        gc.disable()
        try:
            session_id, sender, viewer = await start_watched_session(served)
            server_side = served.on_server(functools.partial(_server_peer_connections, served, session_id))
            assert len(server_side) == 2
            await end_session(served, session_id)
            for participant in (sender, viewer):
                await close_code(participant.ws)
                await participant.pc.close()
            async with asyncio.timeout(WAIT):
                while [ref for ref in server_side if ref() is not None]:
                    await asyncio.sleep(0.1)
        finally:
            gc.enable()

    asyncio.run(scenario())
