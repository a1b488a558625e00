"""docker-compose.yml's topology, run as local processes: the same commands, the same settings.

No Docker engine here, so what compose runs is started as subprocesses on 127.0.0.1 with each
service's environment from docker-compose.yml (interpolated with .env.example) and only the
addresses made local: the machine's PostgreSQL (a fresh schema) for the postgres service, its
Redis (a stream of this test's own) for redis, its Mosquitto for mosquitto, an S3 server on
loopback (moto, tests/s3server.py) with a new bucket for minio and minio-init, free ports, and a
temporary directory for each role's data volume.

In compose's order: migrate (`teleconsult db upgrade`) once, the first users with the CLI, then
gateway (`serve --no-http`) and teleconsult (`serve --no-dicom`), each until its compose health
check passes. Then a C-STORE to the gateway reaches a specialist's WebSocket on the HTTP process
(``study.stored``, through Redis) and is read back over WADO-RS from the HTTP process (the file
went into the bucket), a kiosk's MQTT message becomes an observation read over the HTTP API,
``/readyz`` answers 200, and both processes log JSON only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text

from teleconsult.storage.index import normalise_database_url
from tests.conftest import REDIS_URL, TEST_DATABASE_URL, require_tool
from tests.deploy.compose import filled_env_example, interpolate_all, load
from tests.device_adapters.kiosk.conftest import message
from tests.factories import make_image, write_part10
from tests.integration.test_notifications_workers import (
    PASSWORD,
    _cli,
    _free_port,
    _Log,
    _open,
    _send_all,
    _Studies,
    _token,
)
from tests.integration.test_replicas import _stop
from tests.s3server import CREDENTIALS, S3Server, running_server

pytestmark = [pytest.mark.postgresql, pytest.mark.timeout(300)]

MQTT_BROKER = ("127.0.0.1", 1883)
WAIT = 90.0  # seconds for a process to pass its health check on a busy two-core machine


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The machine's PostgreSQL in a fresh schema (as tests/conftest.py's database_url does)."""
    if not TEST_DATABASE_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set TELECONSULT_TEST_DATABASE_URL")
        pytest.skip("TELECONSULT_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_database_url(TEST_DATABASE_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    try:
        yield f"{TEST_DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def mosquitto() -> None:
    try:
        with socket.create_connection(MQTT_BROKER, timeout=2):
            return
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Mosquitto must listen on 127.0.0.1:1883 for the topology test")
        pytest.skip("no MQTT broker (Mosquitto) listens on 127.0.0.1:1883")


@pytest.fixture
def s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback, standing for the minio service."""
    yield from running_server()


class Topology:
    """docker-compose.yml's teleconsult services, with local addresses."""

    def __init__(
        self, tmp_path: Path, database_url: str, broker_channel: str, kiosk_id: str, s3: S3Server
    ) -> None:
        self.http_port, self.dicom_port = _free_port(), _free_port()
        variables = filled_env_example(
            TURN_HOST="127.0.0.1",
            TELECONSULT_DICOM_PEERS=json.dumps(
                [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
            ),
            TELECONSULT_DICOM_FORWARD_RULES="[]",  # no county PACS here
            TELECONSULT_KIOSK_DEVICES=json.dumps({kiosk_id: "VILLAGE21"}),
        )
        self.document = interpolate_all(load(), variables)
        self.tmp_path = tmp_path
        # Always: the test's ports and Redis stream, fewer gateway processes (two cores, shared);
        # the image sets the data directory (a volume per role) and the hosts.
        self.always = {
            "TELECONSULT_HTTP_HOST": "127.0.0.1",
            "TELECONSULT_HTTP_PORT": str(self.http_port),
            "TELECONSULT_DICOM_HOST": "127.0.0.1",
            "TELECONSULT_DICOM_PORT": str(self.dicom_port),
            "TELECONSULT_BROKER_CHANNEL": broker_channel,
            "TELECONSULT_DICOM_WORKERS": "1",
        }
        # Where compose sets them: the other services' addresses, the ECG inbox volume.
        self.where_set = {
            "TELECONSULT_DATABASE_URL": database_url,
            "TELECONSULT_BROKER_URL": REDIS_URL,
            "TELECONSULT_MQTT_URL": f"mqtt://{MQTT_BROKER[0]}:{MQTT_BROKER[1]}",  # the machine's: anonymous
            "TELECONSULT_ECG_INBOX": str(tmp_path / "ecg-inbox"),
            "TELECONSULT_STORAGE_URL": f"s3://{s3.bucket()}",  # what minio-init makes
            "TELECONSULT_S3_ENDPOINT_URL": s3.url,
            **CREDENTIALS,
        }
        # Not here: a persistent MQTT session, which would outlive the test on the shared broker.
        self.dropped = {"TELECONSULT_MQTT_CLIENT_ID"}

    def service(self, name: str) -> dict[str, Any]:
        service: dict[str, Any] = self.document["services"][name]
        return service

    def env(self, name: str) -> dict[str, str]:
        """Service ``name``'s compose environment, with local addresses."""
        compose = {str(k): str(v) for k, v in self.service(name).get("environment", {}).items()}
        merged = {**os.environ, **compose, **self.always}
        merged["TELECONSULT_DATA_DIR"] = str(self.tmp_path / f"{name}-data")
        merged.update({key: value for key, value in self.where_set.items() if key in compose})
        # boto3 reads nothing of the developer's own AWS set-up
        merged.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        merged["AWS_EC2_METADATA_DISABLED"] = "true"
        for key in self.dropped:
            merged.pop(key, None)
        return merged

    def argv(self, name: str) -> list[str]:
        command = list(self.service(name)["command"])
        assert command[0] == "teleconsult"
        return [sys.executable, "-m", "teleconsult", *command[1:]]

    def start(self, name: str) -> tuple[subprocess.Popen[bytes], _Log]:
        process = subprocess.Popen(self.argv(name), env=self.env(name), stderr=subprocess.PIPE)
        return process, _Log(process)

    def healthy(self, name: str, process: subprocess.Popen[bytes], log: _Log) -> None:
        """Runs the service's compose health check until it passes (as Docker would)."""
        check = self.service(name)["healthcheck"]["test"]
        assert check[:2] == ["CMD", "python"]
        argv = [sys.executable, *check[2:]]
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{name} exited early:\n{log.text()[-3000:]}"
            result = subprocess.run(argv, env=self.env(name), capture_output=True, timeout=30, check=False)
            if result.returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"{name} did not pass its health check in {WAIT:g} s:\n{log.text()[-3000:]}")


def _observations(http_port: int, token: str, kiosk_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"http://127.0.0.1:{http_port}/api/kiosk/observations",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return [o for o in response.json() if o["device_id"] == kiosk_id]


def _publish(topic: str, payload: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-kiosk-{uuid.uuid4().hex[:8]}")
    client.connect(*MQTT_BROKER)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _json_lines(log: _Log) -> list[dict[str, Any]]:
    lines = [line for line in log.text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line (TELECONSULT_LOG_FORMAT=json): {line[:300]}") from None
    return parsed


def test_compose_services_as_local_processes(
    tmp_path: Path,
    postgres_url: str,
    redis_stream: str,
    mosquitto: None,
    s3: S3Server,
) -> None:
    storescu = require_tool("storescu")
    kiosk_id = f"KIOSK-{uuid.uuid4().hex[:8]}"
    topology = Topology(tmp_path, postgres_url, redis_stream, kiosk_id, s3)

    # migrate: once, before anything else (the long-running services do not migrate)
    migrated = subprocess.run(
        topology.argv("migrate"), env=topology.env("migrate"), capture_output=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stderr.decode(errors="replace")[-3000:]
    # the first organisations and users, as docs/deployment.md does with `docker compose exec teleconsult`
    admin_env = topology.env("teleconsult")
    _cli(admin_env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(admin_env, "org", "add", "TOWN01", "--name", "Township 1", "--parent", "COUNTY")
    _cli(admin_env, "org", "add", "TOWN02", "--name", "Township 2", "--parent", "COUNTY")
    _cli(admin_env, "org", "add", "VILLAGE21", "--name", "Village 21", "--parent", "TOWN02")
    _cli(
        admin_env,
        "user",
        "add",
        "specialist",
        "--password",
        PASSWORD,
        "--role",
        "specialist",
        "--org",
        "COUNTY",
    )

    gateway, gateway_log = topology.start("gateway")
    web, web_log = topology.start("teleconsult")
    specialist = None
    try:
        topology.healthy("gateway", gateway, gateway_log)
        topology.healthy("teleconsult", web, web_log)
        ready = httpx.get(f"http://127.0.0.1:{topology.http_port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"index": "ok", "schema": "ok", "storage": "ok"}

        # DICOM into the gateway process, the notification out of the HTTP process
        specialist = _open(topology.http_port, "specialist")
        studies = _Studies(specialist)
        image = make_image(seed=7)
        _send_all(storescu, topology.dicom_port, [write_part10(image, tmp_path / "us.dcm")])
        studies.wait_for({str(image.StudyInstanceUID)}, timeout=60)
        assert studies.seen[str(image.StudyInstanceUID)]["data"]["source_organisation"] == "TOWN01"
        # the gateway put the file in the bucket; the HTTP process serves it from there
        bucket = topology.where_set["TELECONSULT_STORAGE_URL"].removeprefix("s3://")
        objects = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        assert len(objects) == 1
        assert objects[0]["Key"].endswith(".dcm")
        token = _token(topology.http_port, "specialist")
        instance = httpx.get(
            f"http://127.0.0.1:{topology.http_port}/dicomweb/studies/{image.StudyInstanceUID}/series/"
            f"{image.SeriesInstanceUID}/instances/{image.SOPInstanceUID}",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": 'multipart/related; type="application/dicom"',
            },
            timeout=30,
        )
        assert instance.status_code == 200, instance.text[:500]
        assert str(image.SOPInstanceUID).encode() in instance.content

        # a kiosk over MQTT, read over HTTP
        deadline = time.monotonic() + WAIT
        while "kiosk MQTT: subscribed to" not in web_log.text():
            assert time.monotonic() < deadline, f"no MQTT subscription:\n{web_log.text()[-3000:]}"
            time.sleep(0.1)
        _publish(f"teleconsult/kiosk/{kiosk_id}/measurements", json.dumps(message(kiosk_id)))
        deadline = time.monotonic() + 60
        while not (found := _observations(topology.http_port, token, kiosk_id)):
            assert time.monotonic() < deadline, (
                f"the kiosk's message was not stored:\n{web_log.text()[-3000:]}"
            )
            time.sleep(0.2)
        assert {o["channel"] for o in found} == {"mqtt"}
        assert {o["organisation"] for o in found} == {"VILLAGE21"}
        assert {o["type"] for o in found} >= {"blood_pressure", "glucose", "spo2"}
    finally:
        if specialist is not None:
            specialist.close()
        _stop((web, web_log), (gateway, gateway_log))

    # container logs are JSON lines; each role did its own part
    web_lines, gateway_lines = _json_lines(web_log), _json_lines(gateway_log)
    web_messages = " ".join(str(line.get("message", "")) for line in web_lines)
    gateway_messages = " ".join(str(line.get("message", "")) for line in gateway_lines)
    assert "HTTP API on http://127.0.0.1" in web_messages
    assert "association requested by TOWNUS" in gateway_messages
    assert "association requested" not in web_messages
    assert "HTTP API on" not in gateway_messages
    assert "events shared with other replicas" in web_messages
    assert "events shared with other replicas" in gateway_messages
