"""The live exam page of the web client (issue 7 item 5, the browser side of issue 6).

Two browser contexts of one Chromium (its fake camera and microphone) against
the real ``teleconsult serve`` of this suite: the township sonographer starts
the consult's live exam and sends the camera, the county specialist joins as
a viewer, both through the app's own pages. The media go through the server
(aiortc), as in production.

Test-only instrumentation (an init script, never part of the app) records the
pages' ``RTCPeerConnection``s and WebSockets, so a test can read WebRTC
statistics and drop the signalling socket as a network would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web_client.conftest import CHROMIUM, PageWatch, WebServer, login, save_screenshot
from tests.web_client.data import make_us_cine

# Every step talks WebRTC through the server on a busy two-core machine: bounded, not forever.
pytestmark = pytest.mark.timeout(240)

WAIT_MS = 30_000
ARGS = [
    "--use-fake-device-for-media-stream",  # a moving test picture and a beeping microphone
    "--use-fake-ui-for-media-stream",  # camera and microphone allowed without a prompt
    "--disable-gpu",
]
ROW = "[data-role=rows] .row"
STATE = "[data-role=live-state]"

_INSTRUMENT = """
window.__peerConnections = [];
window.__sockets = [];
const NativePeerConnection = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(...args) { super(...args); window.__peerConnections.push(this); }
};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""

_FRAMES_DECODED = """async () => {
  let frames = 0;
  for (const pc of window.__peerConnections) {
    if (pc.connectionState !== "connected") continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames = Math.max(frames, r.framesDecoded || 0);
    });
  }
  return frames;
}"""

# The picture the <video> shows, drawn into a scratch canvas: its size and how much it varies.
_VIDEO_PIXELS = """() => {
  const video = document.querySelector("[data-role=live-video]");
  if (!video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let sum = 0, squares = 0, n = 0;
  for (let i = 0; i < data.length; i += 4 * 97) {
    const grey = (data[i] + data[i + 1] + data[i + 2]) / 3;
    sum += grey; squares += grey * grey; n++;
    colours.add((data[i] >> 3) * 1024 + (data[i + 1] >> 3) * 32 + (data[i + 2] >> 3));
  }
  const mean = sum / n;
  const sd = Math.sqrt(squares / n - mean * mean);
  return { width: canvas.width, height: canvas.height, sd, colours: colours.size };
}"""

# Pixels of the overlay canvas alone (not the video under it) in a marking's colour.
_OVERLAY_PIXELS = """([r, g, b]) => {
  const canvas = document.querySelector("[data-role=live-overlay]");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    const near = [r, g, b].every((value, k) => Math.abs(data[i + k] - value) < 40);
    if (data[i + 3] > 200 && near) count++;
  }
  return count;
}"""

_DROP_SIGNALLING = """() => {
  const open = window.__sockets.filter((s) => s.url.includes("/signal") && s.readyState === WebSocket.OPEN);
  open.forEach((s) => s.close());
  return open.length;
}"""

YELLOW = (0xFF, 0xCC, 0x00)  # the specialist's marks


@pytest.fixture(scope="module")
def browser(browser: Any) -> Iterator[Any]:
    """This module's Chromium: the suite's (one Playwright per process), with fake media devices."""
    instance = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=ARGS, timeout=60_000)
    try:
        yield instance
    finally:
        instance.close()


def _until(check: Callable[[], Any], what: str, timeout: float = WAIT_MS / 1000) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.2)


def _consult_on_a_new_study(web_server: WebServer, tmp_path: Path, patient_id: str) -> tuple[Any, str]:
    study = make_us_cine(patient_name="Chen^Jing=陈^静", patient_id=patient_id)
    web_server.store(study, tmp_path)
    consult = web_server.call(
        "POST",
        "sono1",
        "/api/consults",
        {"study_instance_uid": study.StudyInstanceUID, "urgency": "urgent", "question": "请实时指导扫查。"},
        status=201,
    )
    return study, consult["id"]


def _open_live_tab(
    make_page: Any, user: str, consult_id: str, language: str, **size: int
) -> tuple[Any, PageWatch]:
    page, watch = make_page(**size)
    page.context.add_init_script(_INSTRUMENT)
    page.set_default_timeout(WAIT_MS)
    login(page, user, language=language)
    page.locator(f'{ROW}[data-key="c:{consult_id}"]').click()
    page.click("[data-tab=live]")
    page.wait_for_selector("[data-role=live-exam]:not([hidden]) [data-role=live-start]")
    page.wait_for_selector("[data-role=live-info]:not([data-status=unknown])")  # the session looked up
    return page, watch


def _start_as_sonographer(page: Any) -> None:
    page.click("[data-role=live-start]")
    page.wait_for_selector(f"{STATE}[data-state=connected]")


def _join_as_specialist(page: Any) -> None:
    join = page.locator("[data-role=live-start]:not([disabled])")
    join.wait_for()  # the running session was found
    join.click()
    page.wait_for_selector(f"{STATE}[data-state=connected]")


def _video_arrives(page: Any, more_than: int = 0) -> dict[str, Any]:
    """Frames decoded (getStats), and the <video> showing a picture that is not blank."""
    _until(lambda: page.evaluate(_FRAMES_DECODED) > more_than, "the picture being decoded")
    seen: list[dict[str, Any] | None] = []

    def shown() -> dict[str, Any] | None:
        pixels = page.evaluate(_VIDEO_PIXELS)
        seen.append(pixels)
        return pixels if pixels and pixels["sd"] > 5 and pixels["colours"] >= 8 else None

    # the first frame painted may still be uniform: blank only if it stays so
    try:
        pixels: dict[str, Any] = _until(shown, "a non-blank picture in the video element")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last look: {seen[-1]}") from None
    return pixels


def _drag(page: Any, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag across an element from and to fractions of its box."""
    box = page.locator(selector).bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=6)
    page.mouse.up()


def _no_patient_data(watch: PageWatch, needles: list[str]) -> None:
    for needle in needles:
        assert not [u for u in watch.urls if needle in u], f"{needle} in a request URL"
        assert not [c for c in watch.console if needle in c], f"{needle} in the console"


def test_a_live_exam_from_start_to_snapshot_and_end(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    study, consult_id = _consult_on_a_new_study(web_server, tmp_path, "WEB-LIVE-1")

    sono, sono_watch = _open_live_tab(make_page, "sono1", consult_id, "en")
    assert sono.locator("[data-role=live-info]").inner_text() == "No live exam is running for this consult."
    assert sono.locator("[data-role=live-start]").inner_text() == "Start live exam"
    _start_as_sonographer(sono)
    # the own picture, with the cameras the browser offers to choose from
    _until(lambda: sono.evaluate(_VIDEO_PIXELS), "the self view")
    assert sono.locator("[data-role=live-camera] option").count() >= 1

    specialist, specialist_watch = _open_live_tab(make_page, "specialist", consult_id, "zh-CN")
    assert specialist.locator("[data-role=live-start]").inner_text() == "加入实时检查"
    _join_as_specialist(specialist)
    assert specialist.locator(STATE).inner_text() == "已连接"
    picture = _video_arrives(specialist)
    assert picture["width"] >= 320, picture
    # each hears the other: a remote audio track plays in both pages
    for page in (sono, specialist):
        _until(
            lambda page=page: page.evaluate(
                "document.querySelector('[data-role=live-audio]').srcObject?.getAudioTracks().length"
            ),
            "the other side's audio",
        )
    session = web_server.call("GET", "specialist", f"/api/live-sessions?consult_id={consult_id}")[0]
    assert (session["status"], session["sender"], session["viewers"]) == ("live", "sono1", ["specialist"])

    # the specialist draws an arrow: it appears on the sonographer's picture
    specialist.click("[data-role=live-tool][data-tool=arrow]")
    _drag(specialist, "[data-role=live-overlay]", (0.35, 0.35), (0.6, 0.55))
    specialist.wait_for_selector("[data-role=live-overlay][data-shapes='1']")
    sono.wait_for_selector("[data-role=live-overlay][data-shapes='1']")
    drawn = _until(lambda: sono.evaluate(_OVERLAY_PIXELS, list(YELLOW)) > 200, "the arrow painted")
    assert drawn
    # a text label, and the pointer
    specialist.click("[data-role=live-tool][data-tool=text]")
    specialist.fill("[data-role=live-text]", "胆囊")
    overlay = specialist.locator("[data-role=live-overlay]").bounding_box()
    specialist.mouse.click(overlay["x"] + overlay["width"] * 0.7, overlay["y"] + overlay["height"] * 0.3)
    sono.wait_for_selector("[data-role=live-overlay][data-shapes='2']")
    specialist.click("[data-role=live-tool][data-tool=pointer]")
    specialist.mouse.move(overlay["x"] + overlay["width"] * 0.5, overlay["y"] + overlay["height"] * 0.5)
    specialist.mouse.move(overlay["x"] + overlay["width"] * 0.52, overlay["y"] + overlay["height"] * 0.5)
    sono.wait_for_selector("[data-role=live-overlay][data-pointers='1']")

    # chat both ways
    specialist.fill("[data-role=chat-input]", "请把探头向左移一点 <b>x</b>")
    specialist.press("[data-role=chat-input]", "Enter")
    sono.wait_for_selector("[data-role=chat-log] li.theirs[data-author=specialist]")
    assert "请把探头向左移一点 <b>x</b>" in sono.locator("[data-role=chat-log] li.theirs").inner_text()
    assert sono.evaluate("document.querySelectorAll('[data-role=chat-log] b').length") == 0
    sono.fill("[data-role=chat-input]", "好的，已调整。")
    sono.click("[data-role=chat-send]")
    specialist.wait_for_selector("[data-role=chat-log] li.theirs[data-author=sono1]")
    assert "好的，已调整。" in specialist.locator("[data-role=chat-log] li.theirs").inner_text()

    # muting the microphone stops sending the specialist's voice (the track is disabled)
    specialist.click("[data-role=live-mute]")
    assert specialist.locator("[data-role=live-mute]").get_attribute("aria-pressed") == "true"
    assert (
        specialist.evaluate(
            "window.__peerConnections.at(-1).getSenders().find((s) => s.track?.kind === 'audio')"
            ".track.enabled"
        )
        is False
    )

    # the snapshot: 201, the instance in the study (QIDO), and the study's series list refreshed
    with specialist.expect_response(lambda r: r.url.endswith("/snapshot")) as answer:
        specialist.click("[data-role=live-snapshot]")
    assert answer.value.status == 201
    message = specialist.locator("[data-role=live-message][data-sop-instance-uid]")
    message.wait_for()
    sop_instance_uid = message.get_attribute("data-sop-instance-uid")
    assert sop_instance_uid in message.inner_text()
    found = web_server.call(
        "GET",
        "specialist",
        f"/dicomweb/studies/{study.StudyInstanceUID}/instances?SOPInstanceUID={sop_instance_uid}",
    )
    assert [item["00080018"]["Value"][0] for item in found] == [sop_instance_uid]
    series_uid = found[0]["0020000E"]["Value"][0]
    specialist.click("[data-tab=images]")
    specialist.wait_for_selector(f'[data-role=series] [data-series="{series_uid}"]')
    specialist.click("[data-tab=live]")

    save_screenshot(sono, tmp_path / "live-sonographer.png")
    save_screenshot(specialist, tmp_path / "live-specialist.png")
    save_screenshot(specialist.locator(".live-stage"), tmp_path / "live-specialist-stage.png")

    # the sonographer ends it: both pages say so, and the camera is released
    sono.click("[data-role=live-end]")
    for page in (sono, specialist):
        page.wait_for_selector(f"{STATE}[data-state=ended]")
    assert sono.locator("[data-role=live-message]").inner_text() == "The live exam has ended."
    assert specialist.locator("[data-role=live-message]").inner_text() == "实时检查已结束。"
    assert web_server.call("GET", "sono1", f"/api/live-sessions/{session['id']}")["status"] == "ended"
    assert sono.evaluate("document.querySelector('[data-role=live-video]').srcObject") is None
    sono.wait_for_selector("[data-role=live-start]:text('Start live exam')")
    for watch in (sono_watch, specialist_watch):
        _no_patient_data(watch, ["WEB-LIVE-1", "Chen", "%E9%99%88"])


def test_a_dropped_connection_rejoins_and_a_takeover_is_told(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    _study, consult_id = _consult_on_a_new_study(web_server, tmp_path, "WEB-LIVE-2")
    # the sonographer on a wide screen: the live exam where the images were, the report beside it
    sono, _ = _open_live_tab(make_page, "sono1", consult_id, "en", width=1680, height=1000)
    live, report = (sono.locator(f"[data-role={role}]").bounding_box() for role in ("live-exam", "report"))
    assert live["x"] + live["width"] <= report["x"], "the report panel is to the right of the live exam"
    assert not sono.locator("[data-role=viewer]").is_visible()
    _start_as_sonographer(sono)
    # the specialist on a tablet
    specialist, _ = _open_live_tab(make_page, "specialist", consult_id, "zh-CN", width=820, height=1180)
    _join_as_specialist(specialist)
    _video_arrives(specialist)
    assert specialist.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "no sideways scroll"
    )
    stage = specialist.locator(".live-stage").bounding_box()
    assert stage["width"] > 600, stage

    # the network drops both signalling sockets: each page says so, signs in again and re-offers
    for page in (sono, specialist):
        assert page.evaluate(_DROP_SIGNALLING) == 1
    specialist.wait_for_selector(f"{STATE}[data-state=reconnecting]")
    assert specialist.locator(STATE).inner_text() == "连接中断，正在重连…"
    for page in (sono, specialist):
        page.wait_for_selector(f"{STATE}[data-state=connected]")
        assert page.evaluate("window.__sockets.filter((s) => s.url.includes('/signal')).length") == 2
    # a new peer connection each, and the picture flows again
    assert (
        specialist.evaluate(
            "window.__peerConnections.filter((pc) => pc.connectionState === 'connected').length"
        )
        == 1
    )
    _video_arrives(specialist)
    specialist.click("[data-role=live-tool][data-tool=circle]")
    _drag(specialist, "[data-role=live-overlay]", (0.5, 0.5), (0.6, 0.5))
    sono.wait_for_selector("[data-role=live-overlay][data-shapes='1']")
    save_screenshot(specialist, tmp_path / "live-tablet.png")
    save_screenshot(sono, tmp_path / "live-wide.png")

    # the same sonographer resumes from another window: the first one is told and stops
    second, _ = _open_live_tab(make_page, "sono1", consult_id, "en")
    assert second.locator("[data-role=live-start]").inner_text() == "Resume live exam"
    _start_as_sonographer(second)
    sono.wait_for_selector("[data-role=live-message][data-key='live_exam.error_replaced']")
    assert "taken over" in sono.locator("[data-role=live-message]").inner_text()
    assert sono.locator(STATE).get_attribute("data-state") == "stopped"
    # the specialist keeps watching, now the second window's picture
    decoded = specialist.evaluate(_FRAMES_DECODED)
    _video_arrives(specialist, more_than=decoded)

    # the specialist ends the exam; every page says it ended
    specialist.click("[data-role=live-end]")
    for page in (second, specialist):
        page.wait_for_selector(f"{STATE}[data-state=ended]")
    assert second.locator("[data-role=live-message]").inner_text() == "The live exam has ended."
    specialist.wait_for_selector("[data-role=live-info][data-status=ended]")
    assert specialist.locator("[data-role=live-start]").is_disabled(), "nothing left to join"


def test_the_panel_looks_for_a_running_exam_only_while_its_consult_is_open(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    _study, consult_id = _consult_on_a_new_study(web_server, tmp_path, "WEB-LIVE-3")
    other = make_us_cine(patient_name="Wu^Lan=吴^兰", patient_id="WEB-LIVE-4")
    web_server.store(other, tmp_path)
    page, watch = make_page()
    page.clock.install()  # the page's timers, fast-forwarded below

    def looks() -> int:
        return len([url for url in watch.urls if "/api/live-sessions?consult_id=" in url])

    login(page, "specialist", language="en")
    page.locator(f'{ROW}[data-key="c:{consult_id}"]').click()
    page.click("[data-tab=live]")
    page.wait_for_selector("[data-role=live-info][data-status=none]")
    assert page.locator("[data-role=live-start]").is_disabled(), "nothing to join yet"

    # the sonographer starts it elsewhere: the next look, 10 s on, offers to join
    started = web_server.call("POST", "sono1", "/api/live-sessions", {"consult_id": consult_id}, status=201)
    page.clock.run_for(10_500)
    page.wait_for_selector("[data-role=live-info][data-status=waiting]")
    assert page.locator("[data-role=live-start]").is_enabled()
    assert page.locator("[data-tab=live]").get_attribute("data-running") == "true"
    assert "sono1" in page.locator("[data-role=live-info]").inner_text()
    _join_as_specialist(page)  # before the sonographer's picture: the page waits for it
    assert page.locator("[data-role=live-waiting]").is_visible()

    # another row (a study without consult) leaves the exam: no live tab, and no more looking
    page.locator(f'{ROW}[data-key="s:{other.StudyInstanceUID}"]').click()
    assert page.locator("[data-tab=live]").is_hidden()
    assert page.locator("[data-panel=images]").is_visible(), "back on the images"
    before = looks()
    page.clock.run_for(35_000)
    page.wait_for_timeout(500)
    assert looks() == before, "the closed panel kept polling"
    left = web_server.call("GET", "sono1", f"/api/live-sessions/{started['id']}")
    assert (left["status"], left["viewers"]) == ("waiting", []), "the specialist left; the exam goes on"
    web_server.call("POST", "sono1", f"/api/live-sessions/{started['id']}/end")
