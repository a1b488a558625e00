"""Two `teleconsult serve` replicas on one index and one Redis behave as one server for notifications.

Replica A runs only the DICOM gateway (``--no-http``, with a worker process
whose events it relays), replica B only HTTP (``--no-dicom``). A study
stored through A reaches a specialist whose WebSocket is on B, through the
broker (TELECONSULT_BROKER_URL); a TOWN02 user on B hears nothing of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import require_tool
from tests.factories import make_image, write_part10
from tests.integration.test_notifications_workers import (
    PASSWORD,
    _cli,
    _free_port,
    _Log,
    _open,
    _send_all,
    _Studies,
    _wait_healthy,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def channel() -> Iterator[str]:
    """A stream of this test's own on the machine's Redis, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis must run on 127.0.0.1:6379 for the replica tests")
        pytest.skip("no Redis on 127.0.0.1:6379")
    name = f"teleconsult.test.{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        client.delete(name)
        client.close()


def _start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], _Log]:
    process = subprocess.Popen(
        [sys.executable, "-m", "teleconsult", "serve", *args], env=env, stderr=subprocess.PIPE
    )
    return process, _Log(process)


def _stop(*served: tuple[subprocess.Popen[bytes], _Log]) -> None:
    """Stop every process (whatever the others did), then say which failed."""
    for process, _log in served:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, log in served:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
    for process, log in served:
        assert process.returncode == 0, log.text()[-3000:]


def _wait_for_dicom(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway replica exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the gateway replica did not listen in time")


def test_a_study_stored_through_one_replica_reaches_a_socket_on_the_other(
    tmp_path: Path, database_url: str, channel: str
) -> None:
    storescu = require_tool("storescu")
    dicom_port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_DATABASE_URL": database_url,
        "TELECONSULT_DICOM_PORT": str(dicom_port),
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_WORKERS": "2",
        "TELECONSULT_BROKER_URL": REDIS_URL,
        "TELECONSULT_BROKER_CHANNEL": channel,
        "TELECONSULT_ECG_TRIAGE_ENABLED": "false",
        "TELECONSULT_DICOM_PEERS": json.dumps(
            [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
        ),
    }
    _cli(env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(env, "org", "add", "TOWN01", "--name", "Township 1", "--parent", "COUNTY")
    _cli(env, "org", "add", "TOWN02", "--name", "Township 2", "--parent", "COUNTY")
    _cli(env, "user", "add", "specialist", "--password", PASSWORD, "--role", "specialist", "--org", "COUNTY")
    _cli(env, "user", "add", "sono2", "--password", PASSWORD, "--role", "sonographer", "--org", "TOWN02")

    # Each replica has a data directory of its own (one serve per directory), as in docker-compose.yml.
    gateway_env = {**env, "TELECONSULT_DATA_DIR": str(tmp_path / "gateway-data")}
    gateway, gateway_log = _start(gateway_env, "--no-http")
    web, web_log = _start(env, "--no-dicom")
    specialist = other_township = None
    try:
        _wait_for_dicom(dicom_port, gateway)
        _wait_healthy(http_port, web)
        specialist, other_township = _open(http_port, "specialist"), _open(http_port, "sono2")
        studies = _Studies(specialist)
        images = [make_image(seed=i) for i in range(6)]  # six associations: both gateway processes
        paths = [write_part10(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(images)]
        started = time.monotonic()
        _send_all(storescu, dicom_port, paths)
        sent = {str(ds.StudyInstanceUID) for ds in images}
        studies.wait_for(sent, timeout=30)
        assert time.monotonic() - started < 30
        assert set(studies.seen) == sent
        assert all(m["data"]["source_organisation"] == "TOWN01" for m in studies.seen.values())
        # TOWN02 heard nothing of TOWN01's studies: its next message is the answer to its ping.
        other_township.send(json.dumps({"type": "ping"}))
        assert json.loads(other_township.recv(timeout=10)) == {"type": "pong"}
    finally:
        for ws in (specialist, other_township):
            if ws is not None:
                ws.close()
        _stop((web, web_log), (gateway, gateway_log))
    assert "events shared with other replicas" in web_log.text()
    assert "events shared with other replicas" in gateway_log.text()


def test_an_unreachable_broker_stops_serve_at_start_with_the_reason(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_HTTP_PORT": str(_free_port()),
        "TELECONSULT_DICOM_PORT": str(_free_port()),
        "TELECONSULT_BROKER_URL": f"redis://127.0.0.1:{port}/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "teleconsult", "serve"], env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    stderr = result.stderr.decode(errors="replace")
    assert f"the broker redis://127.0.0.1:{port}/0 cannot be reached" in stderr
    assert "Traceback" not in stderr


def test_a_broker_url_that_is_not_redis_is_refused() -> None:
    from pydantic import ValidationError

    from teleconsult.config import Settings

    with pytest.raises(ValidationError, match="redis://host"):
        Settings(broker_url="nats://127.0.0.1:4222")
