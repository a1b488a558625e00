"""Orthanc as a real PACS on loopback, for integration tests."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
   local log = io.open({path}, "a")
   log:write(dicom.SOPInstanceUID, " ", origin["RemoteAet"] or "", "\\n")
   log:close()
   return true
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Orthanc:
    """One Orthanc on loopback; stop and start it again on the same storage."""

    def __init__(
        self,
        binary: str,
        root: Path,
        modalities: dict[str, list[object]] | None = None,
        extra_config: dict[str, object] | None = None,
    ) -> None:
        root.mkdir()
        self.binary = binary
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.received_log = root / "received.log"
        lua = root / "count.lua"
        lua.write_text(_LUA.replace("{path}", json.dumps(str(self.received_log))))
        self.config = root / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": "test-pacs",
                    "StorageDirectory": str(root / "storage"),
                    "IndexDirectory": str(root / "index"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": self.dicom_port,
                    "HttpPort": self.http_port,
                    "DicomServerEnabled": True,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": False,
                    "DicomAlwaysAllowStore": True,
                    "DicomModalities": modalities or {},
                    "Plugins": [],
                    "LuaScripts": [str(lua)],
                    **(extra_config or {}),
                }
            )
        )
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.root / "orthanc.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [self.binary, str(self.config)], env=DCMTK_ENV, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("Orthanc did not answer /system in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def instances(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc id of every stored instance."""
        ids = httpx.get(f"{self.url}/instances", timeout=10).json()
        return {
            httpx.get(f"{self.url}/instances/{id_}", timeout=10).json()["MainDicomTags"][
                "SOPInstanceUID"
            ]: id_
            for id_ in ids
        }

    def data_set_sha256(self, orthanc_id: str) -> str:
        raw = httpx.get(f"{self.url}/instances/{orthanc_id}/file", timeout=10).content
        meta_end = 144 + int.from_bytes(raw[140:144], "little")
        return hashlib.sha256(raw[meta_end:]).hexdigest()

    def received(self) -> Counter[tuple[str, str]]:
        """(SOP Instance UID, calling AE title) -> how often Orthanc received it."""
        if not self.received_log.exists():
            return Counter()
        pairs = (line.split(" ", 1) for line in self.received_log.read_text().splitlines())
        return Counter((uid, calling_ae_title) for uid, calling_ae_title in pairs)


def orthanc_binary() -> str:
    # The Debian package installs it in /usr/sbin, often not on a user's PATH.
    return "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else require_tool("Orthanc")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    server = Orthanc(orthanc_binary(), tmp_path / "orthanc")
    server.start()
    try:
        yield server
    finally:
        server.stop()
