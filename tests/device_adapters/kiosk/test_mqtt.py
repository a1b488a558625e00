"""A real MQTT round trip through the machine's Mosquitto (127.0.0.1:1883).

Each test registers kiosks with ids of its own (MQTT topics are shared by
everyone using the broker). Skipped, saying why, when no broker listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from device_adapters.kiosk.intake import KioskIntake
from device_adapters.kiosk.mqtt import KioskSubscriber
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from teleconsult.storage.tables import AuditRecord, KioskObservationRow
from tests.conftest import ApiClient
from tests.device_adapters.kiosk.conftest import ID_DIGIT, SECRET, message

pytestmark = pytest.mark.timeout(60)

BROKER = ("127.0.0.1", 1883)
RUN = uuid.uuid4().hex[:8]
GOOD, OTHER = f"KIOSK-{RUN}-A", f"KIOSK-{RUN}-B"


def _broker_listens() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _broker() -> None:
    if not _broker_listens():
        pytest.skip("no MQTT broker (Mosquitto) listens on 127.0.0.1:1883")


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(  # type: ignore[no-any-return]
        secret_key=SECRET,
        kiosk_devices={GOOD: "VILLAGE21", OTHER: "TOWN01"},
        mqtt_url=f"mqtt://{BROKER[0]}:{BROKER[1]}",
        consult_overdue_check_seconds=0,
    )


class Kiosk:
    """A test-side MQTT client: publishes as kiosks, listens to their error topics."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-kiosk-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(*BROKER)
        self.client.loop_start()
        self.client.subscribe("teleconsult/kiosk/+/errors", qos=1)
        assert subscribed.wait(10), "the test client could not subscribe"

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if RUN not in msg.topic:  # other runs' kiosks on the shared broker
            return
        with self.arrived:
            self.errors.append({"topic": msg.topic, **json.loads(msg.payload)})
            self.arrived.notify_all()

    def publish(self, device_id: str, payload: bytes | str, topic_device: str | None = None) -> None:
        topic = f"teleconsult/kiosk/{topic_device or device_id}/measurements"
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def next_error(self, timeout: float = 10.0) -> dict[str, Any]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.errors, timeout), "no error message arrived"
            return self.errors.pop(0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def kiosk() -> Iterator[Kiosk]:
    client = Kiosk()
    yield client
    client.close()


def _subscriber(api: ApiClient) -> KioskSubscriber:
    subscriber: KioskSubscriber = api.client.app.state.kiosk_subscriber  # type: ignore[attr-defined]
    assert subscriber.subscribed.wait(10), "the kiosk subscriber did not subscribe"
    return subscriber


def _until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def _observations(api: ApiClient) -> list[Any]:
    with api.store.index.engine.connect() as conn:
        return list(conn.execute(select(KioskObservationRow.__table__).order_by(KioskObservationRow.pk)))


def test_mqtt_round_trip_stores_refuses_and_keeps_running(
    api: ApiClient, kiosk: Kiosk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subscriber = _subscriber(api)

    # refused, each answered on the device's error topic, the subscriber carrying on
    kiosk.publish(GOOD, b"{not json")
    error = kiosk.next_error()
    assert error["topic"] == f"teleconsult/kiosk/{GOOD}/errors"
    assert (error["status"], error["code"]) == (422, "kiosk-invalid")

    bad = message(GOOD, measurements=[{"type": "temperature", "value": 47, "unit": "°C"}])
    kiosk.publish(GOOD, json.dumps(bad))
    error = kiosk.next_error()
    assert error["errors"][0]["field"] == "measurements.0.temperature"
    assert "temperature 47 °C" in error["errors"][0]["message"]
    assert ID_DIGIT not in json.dumps(error)

    unknown = f"KIOSK-{RUN}-UNKNOWN"
    kiosk.publish(unknown, json.dumps(message(unknown)))
    error = kiosk.next_error()
    assert error["topic"] == f"teleconsult/kiosk/{unknown}/errors"
    assert (error["status"], error["code"]) == (403, "kiosk-device-unknown")

    kiosk.publish(GOOD, json.dumps(message(OTHER)))  # the topic's kiosk is not the message's
    error = kiosk.next_error()
    assert error["code"] == "kiosk-device-unknown"
    assert "names kiosk" in error["detail"]
    assert _observations(api) == []

    # accepted: stored as an HTTP message would be, and audited
    kiosk.publish(GOOD, json.dumps(message(GOOD)).encode())
    rows = _until(lambda: _observations(api) if len(_observations(api)) == 6 else None)
    assert {row.channel for row in rows} == {"mqtt"}
    assert {row.organisation for row in rows} == {"VILLAGE21"}
    # delivered again (QoS 1 is at least once): a duplicate, nothing more stored
    handled = subscriber.handled
    kiosk.publish(
        GOOD, json.dumps(message(GOOD, measured_at=rows[0].measured_at.replace(tzinfo=UTC))).encode()
    )
    _until(lambda: subscriber.handled > handled)
    assert len(_observations(api)) == 6

    with api.store.index.engine.connect() as conn:
        audit = list(
            conn.execute(
                select(AuditRecord.__table__)
                .where(AuditRecord.action == "observation.store")
                .order_by(AuditRecord.pk)
            )
        )
    assert [(row.interface, row.outcome) for row in audit] == [
        ("mqtt", "failure"), ("mqtt", "failure"), ("mqtt", "denied"), ("mqtt", "denied"),
        ("mqtt", "success"), ("mqtt", "success"),
    ]  # fmt: skip
    assert audit[4].actor == f"kiosk:{GOOD}"
    assert audit[4].role == "kiosk"
    assert len(audit[4].patient_id) == 32  # the patient's key, never the ID number
    assert ID_DIGIT not in caplog.text
    assert "refused" in caplog.text  # invalid messages are logged


class Forwarder:
    """A TCP relay to Mosquitto on a port of its own, which a test can cut and restore."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                inside, _ = listener.accept()
            except OSError:
                return
            outside = socket.create_connection(BROKER)
            self.sockets += [inside, outside]
            for source, target in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.listener.close()
        for end in self.sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self.sockets.clear()


def test_the_subscriber_reconnects_with_backoff(
    app_settings: Settings, store: InstanceStore, caplog: pytest.LogCaptureFixture
) -> None:
    """No broker at start, then one, then the connection cut: the subscriber keeps coming back."""
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    intake = KioskIntake(app_settings, store, IdentityStore(store.index.engine), SECRET)
    subscriber = KioskSubscriber(f"mqtt://127.0.0.1:{port}", intake, AuditLog(store.index.engine))
    loop = asyncio.new_event_loop()
    task = loop.create_task(subscriber.run())

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    forwarder = Forwarder(port)
    try:
        _until(lambda: "unavailable" in caplog.text)
        assert not subscriber.subscribed.is_set()
        forwarder.start()
        assert subscriber.subscribed.wait(15), "did not subscribe once the broker was reachable"
        forwarder.cut()
        _until(lambda: not subscriber.subscribed.is_set(), timeout=15)
        forwarder.start()
        assert subscriber.subscribed.wait(15), "did not come back after the connection was cut"
    finally:
        loop.call_soon_threadsafe(task.cancel)
        runner.join(10)
        forwarder.cut()
        loop.close()
