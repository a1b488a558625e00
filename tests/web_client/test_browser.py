"""The web client end to end in Chromium against a real ``teleconsult serve`` (issue 7).

Studies arrive as they would from a township: DCMTK ``storescu`` sends
synthetic DICOM to the gateway, and the page must show them without a
reload. Each test signs in through the page, as a user would.
"""

from __future__ import annotations

import itertools
import re
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.web_client.conftest import PageWatch, WebServer, login, save_screenshot
from tests.web_client.data import (
    DR_PIXEL_SPACING_MM,
    US_FRAME_TIME_MS,
    make_dr,
    make_twelve_lead_ecg,
    make_us_cine,
)

ROW = "[data-role=rows] .row"


def _row(page: Any, study_uid: str) -> Any:
    return page.locator(f'{ROW}[data-key="s:{study_uid}"]')


def _canvas_png(page: Any, selector: str) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(page.locator(selector).screenshot())).convert("RGB"), dtype=np.int16)


def test_a_stored_study_appears_in_the_worklist_live_and_a_dr_is_windowed_zoomed_and_measured(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    page, watch = make_page()
    login(page, "specialist")
    page.evaluate("window.__notReloaded = true")
    save_screenshot(page, tmp_path / "worklist-before.png")

    dr = make_dr(patient_name="王^小明", patient_id="WEB-DR-1")
    web_server.store(dr, tmp_path)
    stored = time.monotonic()
    row = _row(page, dr.StudyInstanceUID)
    row.wait_for()
    print(f"\nstudy in the worklist {time.monotonic() - stored:.2f} s after storescu finished")
    assert page.evaluate("window.__notReloaded") is True, "the worklist updated without a reload"
    assert "王小明" in row.inner_text()

    # open it: the 8 MB DR appears, and the time it took is measured in the page
    clicked = page.evaluate("performance.now()")
    row.click()
    canvas = page.locator("[data-role=image][data-load-ms]")
    canvas.wait_for()
    shown = page.evaluate("performance.now()") - clicked
    load_ms = int(canvas.get_attribute("data-load-ms"))
    print(f"DR 2048x2048 16-bit (8 MB): first paint {load_ms} ms after opening the study", end="")
    print(f" ({shown:.0f} ms from the click)")
    assert page.locator("[data-role=patient-name]").inner_text() == "王小明"
    save_screenshot(page, tmp_path / "dr.png")

    # window/level by dragging changes the pixels
    before = _canvas_png(page, "[data-role=image]")
    window_before = canvas.get_attribute("data-window")
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 150, cy + 120, steps=8)
    page.mouse.up()
    page.wait_for_function(
        "before => document.querySelector('[data-role=image]').dataset.window !== before", arg=window_before
    )
    after = _canvas_png(page, "[data-role=image]")
    changed = np.mean(np.any(before != after, axis=2))
    assert changed > 0.2, f"window/level changed only {changed:.1%} of the canvas pixels"

    # a 100 CSS px line across the image measures 100 / scale image pixels times the pixel spacing
    page.click("[data-role=reset]")
    page.click("[data-tool=measure]")
    page.mouse.move(cx - 50, cy)
    page.mouse.down()
    page.mouse.move(cx + 50, cy, steps=5)
    page.mouse.up()
    text = page.locator("[data-role=measurements] li").first.inner_text()
    value = float(re.search(r"[\d.]+", text).group())
    scale = min(box["width"], box["height"]) / 2048  # fitted: CSS px per image pixel
    expected = 100 / scale * DR_PIXEL_SPACING_MM
    assert abs(value - expected) < 0.02 * expected, (text, expected)
    assert "毫米" in text

    # zoom with the wheel (about the pointer), then pan by dragging
    zoom_before = _percent(page.locator("[data-role=scale-label]").inner_text())
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -600)
    page.wait_for_function(
        "before => parseInt(document.querySelector('[data-role=scale-label]')"
        ".textContent.match(/\\d+(?=%)/)[0]) >= 3 * before",
        arg=zoom_before,
    )
    zoomed = _canvas_png(page, "[data-role=image]")
    page.click("[data-tool=pan]")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 200, cy, steps=4)
    page.mouse.up()
    page.wait_for_timeout(100)
    panned = _canvas_png(page, "[data-role=image]")
    assert np.mean(np.any(zoomed != panned, axis=2)) > 0.2, "panning moved the image"
    save_screenshot(page, tmp_path / "dr-zoomed.png")
    _no_patient_data_leaks(page, watch, ["王", "WEB-DR-1", "%E7%8E%8B"])


def _percent(text: str) -> int:
    return int(re.search(r"(\d+)%", text).group(1))


def _no_patient_data_leaks(page: Any, watch: PageWatch, needles: list[str]) -> None:
    """The address bar never changes, no request URL and no console line carries patient data."""
    assert page.url.rstrip("/") == page.context.pages[0].url.rstrip("/")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page.url), page.url
    for needle in needles:
        assert not [u for u in watch.urls if needle in u], f"{needle} in a request URL"
        assert not [c for c in watch.console if needle in c], f"{needle} in the console"
    stored = page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
    for needle in needles:
        assert needle not in stored


def test_an_ultrasound_cine_plays_at_its_recorded_frame_rate(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    page, _watch = make_page()
    login(page, "specialist", language="en")
    us = make_us_cine(patient_name="Li^Hua=李^华", patient_id="WEB-US-1")
    web_server.store(us, tmp_path)
    row = _row(page, us.StudyInstanceUID)
    row.click()
    canvas = page.locator("[data-role=image][data-load-ms]")
    canvas.wait_for()
    assert canvas.get_attribute("data-frames") == "24"
    assert page.locator("[data-role=patient-name]").inner_text() == "李华"
    assert "fps" in page.locator("[data-role=frame-label]").inner_text()
    first = _canvas_png(page, "[data-role=image]")

    page.click("[data-role=play]")
    start = page.evaluate("performance.now()")
    seen = []
    for _ in range(12):
        page.wait_for_timeout(100)
        seen.append(int(canvas.get_attribute("data-frame")))
    elapsed = page.evaluate("performance.now()") - start
    later = _canvas_png(page, "[data-role=image]")
    save_screenshot(page, tmp_path / "us-cine.png")
    page.click("[data-role=play]")  # pause

    assert len(set(seen)) >= 6, f"frames did not advance: {seen}"
    advanced = sum((b - a) % 24 for a, b in itertools.pairwise(seen))
    expected = elapsed / US_FRAME_TIME_MS * (len(seen) - 1) / len(seen)
    print(f"\ncine: {advanced} frames in about {elapsed:.0f} ms, {expected:.0f} expected at 25 fps")
    assert 0.6 * expected <= advanced <= 1.3 * expected, (seen, elapsed)
    assert np.mean(np.any(first != later, axis=2)) > 0.02, "the canvas shows another frame"


def test_a_twelve_lead_ecg_is_drawn_on_standard_paper(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    page, _watch = make_page()
    login(page, "specialist", language="en")
    ecg = make_twelve_lead_ecg(family="张", given="三", patient_id="WEB-ECG-1")
    web_server.store(ecg, tmp_path)
    _row(page, ecg.StudyInstanceUID).click()
    canvas = page.locator("[data-role=ecg][data-leads]")
    canvas.wait_for()
    assert page.locator("[data-role=patient-name]").inner_text() == "张三"
    leads = canvas.get_attribute("data-leads").split(",")
    assert leads == ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II-rhythm"]
    legend = page.locator("[data-role=ecg-legend]").inner_text()
    for expected in ("25 mm/s", "10 mm/mV", "500 Hz"):
        assert expected in legend

    png = save_screenshot(canvas, tmp_path / "ecg.png")
    pixels = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=np.int16)
    px_per_mm = float(canvas.get_attribute("data-px-per-mm"))
    width_mm = pixels.shape[1] / px_per_mm
    assert abs(width_mm - 265) < 3, f"10 s at 25 mm/s (+ margins) is 265 mm, the paper is {width_mm:.0f} mm"

    def share(colour: tuple[int, int, int], tolerance: int = 40) -> float:
        return float(np.mean(np.all(np.abs(pixels - colour) <= tolerance, axis=2)))

    assert share((0xE0, 0x66, 0x66)) > 0.02, "the 5 mm grid"
    assert share((0xF4, 0xC2, 0xC2), 12) > 0.05, "the 1 mm grid"
    assert share((0, 0, 0), 60) > 0.005, "the traces"
    # The major grid repeats every 5 mm: a row of the paper has a line about every 5 * px_per_mm pixels.
    band = np.all(np.abs(pixels[pixels.shape[0] // 2] - (0xE0, 0x66, 0x66)) <= 40, axis=1)
    starts = np.flatnonzero(band[1:] & ~band[:-1])
    gaps = np.diff(starts)
    assert abs(float(np.median(gaps)) - 5 * px_per_mm) <= 2, (np.median(gaps), px_per_mm)


def test_a_report_is_written_signed_co_signed_and_verified_with_its_pdf(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    us = make_us_cine(patient_name="Zhou^Min=周^敏", patient_id="WEB-RPT-1")
    web_server.store(us, tmp_path)

    # the township doctor asks for a consult, writes the preliminary report and signs it
    page, _watch = make_page()
    login(page, "doctor1", language="en")
    _row(page, us.StudyInstanceUID).click()
    page.click("[data-tab=report]")
    page.select_option("[data-role=urgency]", "urgent")
    page.fill("[data-role=question]", "肝内低回声结节，请会诊。")
    page.click("[data-role=request-consult]")
    page.wait_for_selector("[data-role=report-form]")
    consult_row = page.locator(f"{ROW}[data-urgency=urgent]")
    assert "周敏" in consult_row.inner_text()
    assert re.search(r"\d+:\d\d:\d\d left", consult_row.locator(".countdown").inner_text()), "a 4 h countdown"
    page.select_option("[data-role=template]", "abdominal_ultrasound")
    page.fill("textarea[name='liver.description']", "右叶见一低回声结节，约12×10mm。")
    page.fill("[data-role=impression]", "肝右叶低回声结节。")
    page.click("[data-role=save]")
    page.wait_for_selector("[data-role=report-state][data-status=draft]")
    page.click("[data-role=sign]")
    page.wait_for_selector("[data-role=report-state][data-status=preliminary]")
    page.wait_for_selector("[data-role=verification][data-valid=true]")
    page.click("[data-role=logout]")
    page.wait_for_selector("[data-role=login]:not([hidden])")

    # the county specialist accepts, edits the impression and co-signs: final, both signatures valid
    login(page, "specialist", language="en")
    consult_row = page.locator(f"{ROW}[data-urgency=urgent]").filter(has_text="周敏")
    consult_row.click()
    page.click("[data-tab=report]")
    page.click("[data-role=accept]")
    page.wait_for_selector("[data-role=report-form] [data-role=sign]")
    liver = page.locator("textarea[name='liver.description']").input_value()
    assert liver == "右叶见一低回声结节，约12×10mm。", "the township's draft"
    page.fill("[data-role=impression]", "肝右叶低回声结节，考虑血管瘤可能。")
    page.click("[data-role=sign]")
    page.wait_for_selector("[data-role=report-state][data-status=final]")
    verification = page.locator("[data-role=verification][data-valid=true]")
    verification.wait_for()
    assert "all 2 signatures verify" in verification.inner_text()
    signatures = page.locator("[data-role=signatures] li")
    assert signatures.count() == 2
    assert "王医生" in signatures.nth(0).inner_text(), "the township doctor's performing signature"
    assert "赵医生" in signatures.nth(1).inner_text(), "the specialist's reviewing signature"
    assert page.locator("[data-role=impression]").is_disabled(), "a final report is read-only"

    # the PDF of the signed report, previewed from the authorised fetch
    page.click("[data-role=show-pdf]")
    frame = page.locator("[data-role=pdf-frame]")
    frame.wait_for(timeout=30_000)
    assert frame.get_attribute("src").startswith("blob:")
    assert int(frame.get_attribute("data-bytes")) > 2000

    # a signed addendum keeps the report valid
    page.fill("[data-role=addendum-text]", "补充：增强CT示肝血管瘤。")
    page.fill("[data-role=addendum-reason]", "增强CT结果")
    page.click("[data-role=add-addendum]")
    page.wait_for_selector("[data-role=report-state][data-status=amended]")
    page.wait_for_selector("[data-role=verification][data-valid=true]")
    assert "all 3 signatures verify" in page.locator("[data-role=verification]").inner_text()
    save_screenshot(page, tmp_path / "report.png")


def test_the_language_switches_and_survives_a_reload_with_the_session_resumed(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    page, _watch = make_page()
    login(page, "specialist", language="zh-CN")
    assert page.locator(".worklist-head h2").inner_text() == "工作列表"
    assert page.locator("[data-role=logout]").inner_text() == "退出登录"
    save_screenshot(page, tmp_path / "zh-CN.png")
    page.select_option("[data-role=language]", "en")
    assert page.locator(".worklist-head h2").inner_text() == "Worklist"
    assert page.locator("[data-role=logout]").inner_text() == "Sign out"
    assert page.evaluate("document.documentElement.lang") == "en"
    save_screenshot(page, tmp_path / "en.png")

    # tokens: access token in memory only, the refresh token in sessionStorage, nothing in localStorage
    assert "ey" not in page.evaluate("JSON.stringify({...localStorage})")
    assert list(page.evaluate("Object.keys(sessionStorage)")) == ["teleconsult.refresh"]
    page.reload()
    page.wait_for_selector("[data-role=workbench]:not([hidden])")
    assert page.locator(".worklist-head h2").inner_text() == "Worklist"


def test_an_expired_session_returns_to_the_sign_in_page(web_server: WebServer, make_page: Any) -> None:
    page, _watch = make_page()
    login(page, "specialist", language="en")
    # The server now refuses the access token and the refresh token alike.
    page.route(
        "**/api/**",
        lambda route: route.fulfill(status=401, content_type="application/problem+json", body="{}"),
    )
    page.route("**/dicomweb/**", lambda route: route.fulfill(status=401, body="{}"))
    # The next call of the app (here: who am I) meets a 401, its refresh another: the session is over.
    page.evaluate("import('./js/api.js').then((api) => api.me()).catch(() => null)")
    page.wait_for_selector("[data-role=login]:not([hidden])")
    assert (
        page.locator("[data-role=login-message]").inner_text()
        == "Your session has expired. Please sign in again."
    )
    assert page.evaluate("sessionStorage.length") == 0


def test_patient_names_and_texts_are_shown_as_text_never_as_markup(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    payload = "<img src=x onerror=alert(1)>"
    dr = make_dr(patient_name=payload, patient_id="WEB-XSS-1")
    dr.StudyDescription = '<img src=x onerror="window.__xss=1">'
    web_server.store(dr, tmp_path)
    consult = web_server.call(
        "POST",
        "sono1",
        "/api/consults",
        {
            "study_instance_uid": dr.StudyInstanceUID,
            "urgency": "critical",
            "question": f"{payload} <b>bold</b>",
        },
        status=201,
    )

    page, watch = make_page()
    login(page, "specialist", language="en")
    row = page.locator(f'{ROW}[data-key="c:{consult["id"]}"]')
    assert "<b>bold</b>" in row.inner_text()
    row.click()
    page.wait_for_selector("[data-role=image][data-load-ms]")
    banner = page.locator("[data-role=banner]").inner_text()
    assert "<img src" in banner
    assert 'onerror="window.__xss=1">' in banner
    page.click("[data-tab=report]")
    page.wait_for_selector("[data-role=report-form]")
    assert f"{payload} <b>bold</b>" in page.locator(".consult-summary").inner_text()
    assert page.evaluate("document.querySelectorAll('img, b').length") == 0, "no element was made from data"
    assert page.evaluate("window.__xss") is None
    save_screenshot(page, tmp_path / "xss.png")
    assert not watch.dialogs
    _no_patient_data_leaks(page, watch, ["WEB-XSS-1", "onerror"])


def test_the_layout_fits_a_tablet(tmp_path: Path, web_server: WebServer, make_page: Any) -> None:
    page, _watch = make_page(width=820, height=1180)
    login(page, "specialist", language="zh-CN")
    ecg = make_twelve_lead_ecg(family="刘", given="洋", patient_id="WEB-TAB-1")
    web_server.store(ecg, tmp_path)
    _row(page, ecg.StudyInstanceUID).click()
    page.wait_for_selector("[data-role=ecg][data-leads]")
    worklist = page.locator("[data-role=worklist]").bounding_box()
    workspace = page.locator("[data-role=workspace]").bounding_box()
    assert worklist["y"] + worklist["height"] <= workspace["y"] + 1, "the worklist sits above the workspace"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
    save_screenshot(page, tmp_path / "tablet.png")


def test_wide_screens_show_images_and_report_side_by_side(
    tmp_path: Path, web_server: WebServer, make_page: Any
) -> None:
    page, _watch = make_page(width=1680, height=1000)
    login(page, "specialist", language="en")
    us = make_us_cine(patient_name="Sun^Li=孙^丽", patient_id="WEB-WIDE-1")
    web_server.store(us, tmp_path)
    _row(page, us.StudyInstanceUID).click()
    page.wait_for_selector("[data-role=image][data-load-ms]")
    page.wait_for_selector("[data-role=request-consult]")
    images = page.locator("[data-role=viewer]").bounding_box()
    report = page.locator("[data-role=report]").bounding_box()
    assert images["x"] + images["width"] <= report["x"], "the report panel is to the right of the images"
    assert not page.locator("[data-role=tabs]").is_visible()
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight"), (
        "panels scroll, not the page"
    )
    save_screenshot(page, tmp_path / "wide.png")
