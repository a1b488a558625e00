"""A real S3-compatible HTTP server on loopback for the object-storage tests: moto's standalone server.

``python -m moto.server`` (moto[s3] with flask, in the test extra) is started
as a subprocess on port 0; the port is read from the line werkzeug prints
once it listens, and a thread keeps reading its log so the pipe never fills.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

_LISTENING = re.compile(r"Running on http://127\.0\.0\.1:([0-9]+)")

# Credentials only moto checks; the standard variables the product reads (DESIGN.md).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "teleconsult-test", "AWS_SECRET_ACCESS_KEY": "teleconsult-test-secret"}


class S3Server:
    """One moto server process; ``stop()`` makes the endpoint refuse connections."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._port: int | None = None
        self._ready = threading.Event()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or self._port is None:
            self.stop()
            raise RuntimeError("moto server did not start:\n" + "".join(self.log[-20:]))
        self.url = f"http://127.0.0.1:{self._port}"

    def _read_log(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.log.append(line)
            if self._port is None and (match := _LISTENING.search(line)):
                self._port = int(match.group(1))
                self._ready.set()
        self._ready.set()  # exited before listening

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"teleconsult-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables for the test server, and nothing from the developer's ~/.aws."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def running_server() -> Iterator[S3Server]:
    """A server for one fixture: started, yielded, stopped."""
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
