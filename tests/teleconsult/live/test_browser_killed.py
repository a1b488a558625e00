"""A real browser killed in the middle of a live exam: the server lets go of it, the exam goes on.

Headless Chromium (Debian's, never downloaded) sends its fake camera; an
aiortc specialist watches. Then every process of that browser is killed
with SIGKILL, as when a township PC loses power: no close frame, no ICE
goodbye, only the kernel's reset of its sockets. The server must drop the
sender at once (its signalling socket ends), close its peer connection and
free its UDP sockets and tasks, while the viewer stays joined; another
sender then takes over and the viewer sees the new picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tests.teleconsult.live.conftest import (
    BLUE,
    WAIT,
    ColourTrack,
    Served,
    close_code,
    frame_where,
    join,
    looks_like,
)
from tests.teleconsult.live.leaks import added, server_tasks, udp_sockets
from tests.teleconsult.live.test_browser import ARGS, CHROMIUM, PAGE, PAGE_PATH


@pytest.fixture
def configure_app() -> Callable[[FastAPI], None]:
    def add_page(app: FastAPI) -> None:
        app.add_api_route(PAGE_PATH, lambda: HTMLResponse(PAGE), methods=["GET"], include_in_schema=False)

    return add_page


@pytest.fixture
def marker() -> str:
    """An argument only this test's Chromium processes carry (Chromium ignores switches it does not know)."""
    return f"--teleconsult-test-{uuid.uuid4().hex}"


@pytest.fixture
def chromium(marker: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package); no browser is downloaded")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*ARGS, marker]
        )
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):  # killed: Playwright may already know it is gone
                browser.close()


def _kill_chromium(marker: str) -> int:
    """SIGKILL every process whose command line carries ``marker``; how many."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in command:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.1)


def test_a_killed_browser_sender_is_let_go_and_the_exam_goes_on(
    served: Served, chromium: object, marker: str
) -> None:
    from playwright.sync_api import Browser

    assert isinstance(chromium, Browser)
    session_id = served.start_session()["id"]
    tasks_before = served.on_server(server_tasks)
    udp_before = udp_sockets()

    page = chromium.new_context().new_page()
    page.set_default_timeout(WAIT * 1000)
    page.goto(f"{served.base}{PAGE_PATH}")
    signed_in = [served.signal_url(session_id), served.token("sono1"), "sender"]
    assert page.evaluate("(a) => live(a[0], a[1], a[2])", signed_in)

    async def exam() -> None:
        viewer = await join(served, "specialist", session_id, "viewer")
        track = await viewer.track("video")
        await frame_where(track, lambda frame: frame.width == 320)  # the browser's fake camera

        assert await asyncio.to_thread(_kill_chromium, marker) > 0
        state: dict[str, object] = {}
        async with asyncio.timeout(WAIT):
            while state.get("sender") is not None or not state:
                state = (await served.acall("GET", "specialist", f"/api/live-sessions/{session_id}")).json()
                await asyncio.sleep(0.1)
        assert (state["status"], state["viewers"]) == ("waiting", ["specialist"])
        async with asyncio.timeout(WAIT):
            while served.on_server(served.hub.peer_connections) != 1:  # the viewer's only
                await asyncio.sleep(0.1)

        # Another sender takes over: the viewer, still joined, sees its picture.
        sender = await join(served, "sono1", session_id, "sender", video=ColourTrack(BLUE))
        await frame_where(track, looks_like(BLUE))
        ended = await served.acall("POST", "sono1", f"/api/live-sessions/{session_id}/end")
        assert ended.json()["status"] == "ended"
        for participant in (sender, viewer):
            assert await close_code(participant.ws) == 1000
            await participant.pc.close()

    # Playwright's sync API runs a loop in this thread: the aiortc viewer gets a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, exam()).result(timeout=4 * WAIT)
    leftovers: list[str] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        leftovers = added(tasks_before, served.on_server(server_tasks))
        if not leftovers and udp_sockets() <= udp_before:
            break
        time.sleep(0.1)
    assert leftovers == []
    assert udp_sockets() <= udp_before
    assert served.on_server(served.hub.peer_connections) == 0
