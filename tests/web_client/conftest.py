"""A real ``teleconsult serve`` on free loopback ports, and Debian's Chromium driven by Playwright.

One server for the whole browser suite (users are made once with the CLI:
argon2 is slow), started with one gateway process (the machine has few
cores). Each test gets a fresh browser context (no shared sessionStorage),
and every page is watched for uncaught errors, Content-Security-Policy
violations and console output, which the test's teardown checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from tests.conftest import require_tool
from tests.factories import write_part10
from tests.orthanc import DCMTK_ENV, free_port

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct-horse-battery"
DEVICE_AE = "TOWNUS"
# (username, role, organisation, display name)
USERS = [
    ("sono1", "sonographer", "TOWN01", "李超声"),
    ("doctor1", "township_doctor", "TOWN01", "王医生"),
    ("specialist", "specialist", "COUNTY", "赵医生"),
]
TIMEOUT_MS = 20_000


@dataclass
class WebServer:
    process: subprocess.Popen[bytes]
    base_url: str
    dicom_port: int
    data_dir: Path
    log_lines: list[str] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.base_url}/api/auth/token", data={"username": user, "password": PASSWORD}, timeout=30
            )
            assert response.status_code == 200, response.text
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def call(self, method: str, user: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = httpx.request(
            method,
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            json=body,
            timeout=30,
        )
        assert response.status_code == status, f"{method} {path}: {response.text}"
        return response.json()

    def store(self, ds: Dataset, folder: Path) -> None:
        """Send ``ds`` with DCMTK storescu as the township's device."""
        path = write_part10(ds, folder / f"{ds.SOPInstanceUID}.dcm")
        result = subprocess.run(
            [
                require_tool("storescu"),
                "-aet",
                DEVICE_AE,
                "-aec",
                "TELECONSULT",
                "127.0.0.1",
                str(self.dicom_port),
                str(path),
            ],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    def log_tail(self) -> str:
        return "".join(self.log_lines[-60:])


def _read_log(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stderr is not None
    for raw in process.stderr:
        lines.append(raw.decode(errors="replace"))


# Package scope: the server and the browser (whose sync API keeps an event loop in this
# thread) end with the web client's tests, before any other package's asyncio tests run.
@pytest.fixture(scope="package")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    require_tool("storescu")
    root = tmp_path_factory.mktemp("web-server")
    http_port, dicom_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TELECONSULT_")}
    env.update(
        {
            "TELECONSULT_DATA_DIR": str(root / "data"),
            "TELECONSULT_HTTP_HOST": "127.0.0.1",
            "TELECONSULT_HTTP_PORT": str(http_port),
            "TELECONSULT_DICOM_PORT": str(dicom_port),
            "TELECONSULT_DICOM_WORKERS": "1",
            # The tests' ECGs are drawing fixtures (sine-like leads), which the triage screens as
            # ST elevation: its critical consults would rearrange the worklist under the tests'
            # clicks. Triage and its alerts are tested in tests/device_adapters/triage.
            "TELECONSULT_ECG_TRIAGE_ENABLED": "false",
            "TELECONSULT_DICOM_PEERS": json.dumps(
                [{"ae_title": DEVICE_AE, "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
            ),
        }
    )
    cli = [sys.executable, "-m", "teleconsult"]

    def run(*args: str) -> None:
        done = subprocess.run(
            [*cli, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"teleconsult {' '.join(args[:2])}: {done.stderr}"

    run("org", "add", "COUNTY", "--name", "县人民医院")
    run("org", "add", "TOWN01", "--name", "一号乡镇卫生院", "--parent", "COUNTY")
    for username, role, organisation, display_name in USERS:
        run(
            "user",
            "add",
            username,
            "--password",
            PASSWORD,
            "--role",
            role,
            "--org",
            organisation,
            "--display-name",
            display_name,
        )

    process = subprocess.Popen([*cli, "serve"], env=env, stderr=subprocess.PIPE, cwd=root)
    server = WebServer(process, f"http://127.0.0.1:{http_port}", dicom_port, root / "data")
    reader = threading.Thread(target=_read_log, args=(process, server.log_lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"teleconsult serve exited:\n{server.log_tail()}"
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"teleconsult serve did not become healthy:\n{server.log_tail()}"
            )
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=60_000)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class PageWatch:
    """What a page did that a test may check: errors, CSP violations, console text, requested URLs."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


# Registered before any script of the app runs: records CSP violations where a test can read them.
_CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || ""));
});
"""


@pytest.fixture
def make_page(browser: Any, web_server: WebServer) -> Iterator[Callable[..., tuple[Any, PageWatch]]]:
    """New pages in fresh contexts (laptop size unless told), each with its watch."""
    contexts: list[tuple[Any, Any, PageWatch]] = []

    def _make(width: int = 1366, height: int = 900) -> tuple[Any, PageWatch]:
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=web_server.base_url
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(_CSP_RECORDER)
        page = context.new_page()
        watch = PageWatch()
        page.on("pageerror", lambda error: watch.errors.append(str(error)))
        page.on("console", lambda message: watch.console.append(f"{message.type}: {message.text}"))
        page.on("request", lambda request: watch.urls.append(request.url))

        def dialog(d: Any) -> None:
            watch.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        contexts.append((context, page, watch))
        return page, watch

    yield _make
    for context, page, watch in contexts:
        violations = page.evaluate("window.__cspViolations") if not page.is_closed() else []
        context.close()
        assert not watch.errors, f"uncaught errors in the page: {watch.errors}"
        assert not violations, f"Content-Security-Policy violations: {violations}"
        assert not watch.dialogs, f"the page opened dialogs: {watch.dialogs}"


def login(page: Any, user: str, *, language: str | None = None) -> None:
    """Open the app and sign in as ``user``; waits for the worklist and the live connection."""
    page.goto("/")
    if language:
        page.select_option("[data-role=language]", language)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("[data-role=login-form] button[type=submit]")
    page.wait_for_selector("[data-role=workbench]:not([hidden])")
    page.wait_for_selector("[data-role=live][data-state=live]")


def distinct_colours(png: bytes) -> int:
    image = Image.open(BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24) or [])


def save_screenshot(page_or_locator: Any, path: Path, minimum_colours: int = 8) -> bytes:
    """Screenshot to ``path`` (a test artefact), checked not to be blank."""
    png: bytes = page_or_locator.screenshot(path=str(path))
    colours = distinct_colours(png)
    assert colours >= minimum_colours, f"{path.name} looks blank: {colours} distinct colours"
    return png
