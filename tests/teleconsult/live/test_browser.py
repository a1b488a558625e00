"""Headless Chromium as a sender (its fake camera) and as a viewer, through the server.

The page is a few lines of the standard WebRTC API, served by a route the
test adds to the app (at the server's origin: a secure context for
getUserMedia, and the same address space for Chromium's local network
access checks), so it needs nothing from the web client. Chromium's fake
devices give a moving test picture and a beep; host IPs are shown as they
are (not hidden behind mDNS names aiortc would have to resolve).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tests.teleconsult.live.conftest import WAIT, Served

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>live test</title></head>
<body><video id="video" autoplay muted playsinline></video>
<script>
window.annotations = [];
window.live = async (url, token, role) => {
  const ws = new WebSocket(url);
  const inbox = [];
  let waiting = null;
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (waiting) { const resolve = waiting; waiting = null; resolve(message); } else inbox.push(message);
  };
  const next = () => inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => { waiting = r; });
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  ws.send(JSON.stringify({type: "auth", token}));
  const ready = await next();
  if (ready.type !== "ready") throw new Error(JSON.stringify(ready));
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  window.ws = ws;
  const media = await navigator.mediaDevices.getUserMedia(
    role === "sender" ? {video: {width: 320, height: 240}, audio: true} : {audio: true});
  if (role === "sender") {
    media.getTracks().forEach((track) => pc.addTrack(track, media));
  } else {
    pc.addTransceiver("video", {direction: "recvonly"});
    media.getAudioTracks().forEach((track) => pc.addTrack(track, media));
  }
  pc.ontrack = (event) => {
    if (event.track.kind !== "video") return;
    document.getElementById("video").srcObject = new MediaStream([event.track]);
  };
  const channel = pc.createDataChannel("annotations");
  channel.onmessage = (event) => window.annotations.push(JSON.parse(event.data));
  window.channel = channel;
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
  });
  ws.send(JSON.stringify({type: "offer", sdp: pc.localDescription.sdp, role}));
  const answer = await next();
  if (answer.type !== "answer") throw new Error(JSON.stringify(answer));
  await pc.setRemoteDescription(answer);
  return true;
};
window.videoStat = async (type, field) => {
  let value = 0;
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === type && s.kind === "video") value = s[field] || 0;
  });
  return value;
};
</script></body></html>
"""


PAGE_PATH = "/live-test.html"


@pytest.fixture
def configure_app() -> Callable[[FastAPI], None]:
    def add_page(app: FastAPI) -> None:
        app.add_api_route(PAGE_PATH, lambda: HTMLResponse(PAGE), methods=["GET"], include_in_schema=False)

    return add_page


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.1)


@pytest.fixture
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package); no browser is downloaded")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_chromium_sends_its_camera_and_another_chromium_decodes_it(served: Served, chromium: object) -> None:
    from playwright.sync_api import Browser, Page

    assert isinstance(chromium, Browser)
    session = served.start_session()
    url = served.signal_url(session["id"])

    def page_for(user: str, role: str) -> Page:
        page = chromium.new_context().new_page()
        page.set_default_timeout(WAIT * 1000)
        page.goto(f"{served.base}{PAGE_PATH}")
        assert page.evaluate("(a) => live(a[0], a[1], a[2])", [url, served.token(user), role])
        return page

    sender = page_for("sono1", "sender")
    viewer = page_for("specialist", "viewer")
    _until(
        lambda: viewer.evaluate("videoStat('inbound-rtp', 'framesDecoded')") > 0, "the viewer decoding frames"
    )
    assert sender.evaluate("videoStat('outbound-rtp', 'framesEncoded')") > 0
    state = served.call("GET", "specialist", f"/api/live-sessions/{session['id']}").json()
    assert (state["status"], state["sender"], state["viewers"]) == ("live", "sono1", ["specialist"])
    assert state["frames_received"] > 0
    # the browser's picture can be captured into the study
    snapshot = served.call("POST", "specialist", f"/api/live-sessions/{session['id']}/snapshot")
    assert snapshot.status_code == 201, snapshot.text
    # and a browser's annotation reaches the other browser through the server
    for page in (sender, viewer):
        _until(lambda page=page: page.evaluate("window.channel.readyState") == "open", "the channel opening")
    viewer.evaluate(
        "window.channel.send(JSON.stringify({type: 'circle', centre: {x: 0.5, y: 0.5}, radius: 0.1}))"
    )
    _until(lambda: sender.evaluate("window.annotations.length") > 0, "the annotation arriving")
    got = sender.evaluate("window.annotations[0]")
    assert (got["type"], got["from"]["username"]) == ("circle", "specialist")
    ended = served.call("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
    assert ended.json()["status"] == "ended"
    _until(lambda: viewer.evaluate("window.ws.readyState") == 3, "the server closing the viewer's socket")
    _until(
        lambda: viewer.evaluate("window.pc.connectionState") in ("closed", "failed", "disconnected"),
        "the viewer's peer connection ending",
    )
