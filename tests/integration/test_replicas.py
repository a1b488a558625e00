"""Two `teleconsult serve` replicas on one index and one Redis behave as one server.

Replica A runs only the DICOM gateway (``--no-http``, with a worker process
whose events it relays), replica B only HTTP (``--no-dicom``). A study
stored through A reaches a specialist whose WebSocket is on B, through the
broker (TELECONSULT_BROKER_URL); a TOWN02 user on B hears nothing of it.
Two HTTP replicas with TELECONSULT_REPLICA_URL share live sessions: one
started on A is listed, joined and ended through B.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import REDIS_URL, require_tool
from tests.factories import make_image, part10, write_part10
from tests.integration.test_notifications_workers import (
    PASSWORD,
    _cli,
    _free_port,
    _Log,
    _open,
    _send_all,
    _Studies,
    _token,
    _wait_healthy,
)


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
    tmp_path: Path, database_url: str, redis_stream: str
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
        "TELECONSULT_BROKER_CHANNEL": redis_stream,
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


def _stow(http_port: int, token: str, data: bytes) -> None:
    boundary = "replicas"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
    response = httpx.post(
        f"http://127.0.0.1:{http_port}/dicomweb/studies",
        content=body + f"\r\n--{boundary}--\r\n".encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_a_live_session_on_one_replica_is_joined_and_ended_through_the_other(
    tmp_path: Path, database_url: str
) -> None:
    """Two HTTP replicas with TELECONSULT_REPLICA_URL: B finds A's session and relays to it."""
    port_a, port_b = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATABASE_URL": database_url,
        "TELECONSULT_SECRET_KEY": "two-replicas-share-one-secret-key-of-32+chars",
        "TELECONSULT_ECG_TRIAGE_ENABLED": "false",
        "TELECONSULT_CONSULT_OVERDUE_CHECK_SECONDS": "0",
    }
    replica = {
        name: {
            **env,
            "TELECONSULT_DATA_DIR": str(tmp_path / name),
            "TELECONSULT_HTTP_PORT": str(port),
            "TELECONSULT_REPLICA_URL": f"http://127.0.0.1:{port}",
        }
        for name, port in (("a", port_a), ("b", port_b))
    }
    _cli(replica["a"], "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(replica["a"], "org", "add", "TOWN01", "--name", "Township 1", "--parent", "COUNTY")
    for user, role, organisation in (
        ("specialist", "specialist", "COUNTY"),
        ("sono1", "sonographer", "TOWN01"),
    ):
        _cli(replica["a"], "user", "add", user, "--password", PASSWORD, "--role", role, "--org", organisation)
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = _start(replica["a"], "--no-dicom")
    b = _start(replica["b"], "--no-dicom")
    try:
        _wait_healthy(port_a, a[0])
        _wait_healthy(port_b, b[0])
        sono, specialist = _token(port_a, "sono1"), _token(port_b, "specialist")
        study = make_image(modality="US", seed=7)
        _stow(port_a, sono, part10(study))
        as_sono = {"Authorization": f"Bearer {sono}"}
        as_specialist = {"Authorization": f"Bearer {specialist}"}
        consult = httpx.post(
            f"{url_a}/api/consults",
            json={
                "study_instance_uid": study.StudyInstanceUID,
                "urgency": "urgent",
                "question": "请实时会诊",
                "target_organisation": "COUNTY",
            },
            headers=as_sono,
            timeout=30,
        ).json()["id"]
        started = httpx.post(
            f"{url_a}/api/live-sessions",
            json={"consult_id": consult},
            headers=as_sono,
            timeout=30,
        )
        assert started.status_code == 201, started.text
        session_id = started.json()["id"]

        listed = httpx.get(
            f"{url_b}/api/live-sessions",
            params={"consult_id": consult},
            headers=as_specialist,
        )
        assert [item["id"] for item in listed.json()] == [session_id]
        ws = connect(
            f"ws://127.0.0.1:{port_b}/api/live-sessions/{session_id}/signal", open_timeout=10, legacy=True
        )
        try:
            ws.send(json.dumps({"type": "auth", "token": specialist}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
            ended = httpx.post(
                f"{url_b}/api/live-sessions/{session_id}/end",
                headers=as_specialist,
                timeout=30,
            )
            assert ended.json()["status"] == "ended", ended.text
            assert _close_code(ws) == 1000  # A's close, passed on by B
        finally:
            ws.close()
    finally:
        _stop(b, a)


def _close_code(ws: ClientConnection) -> int | None:
    """The code the server closes ``ws`` with (messages before the close skipped)."""
    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
