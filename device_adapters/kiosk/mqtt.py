"""Kiosk measurements over MQTT: ``teleconsult/kiosk/<device id>/measurements``, QoS 1.

One subscriber per HTTP process when ``TELECONSULT_MQTT_URL`` is set, run as
a task on the app's event loop (the kiosk router's lifespan). It never dies
of what it receives: a message that cannot be stored is logged (without
the resident ID number or the name) and answered on
``teleconsult/kiosk/<device id>/errors`` with the reason, as JSON of the
API's problem fields. A lost broker connection is retried with exponential
backoff (1 s doubling to 60 s), forever, until the app stops. The broker
authenticates kiosks (per-device user names and an ACL, docs/devices.md);
the device id in the topic must be registered and match the message's.

Storing runs on a worker thread (``KioskIntake`` hashes, parses ECGs and
writes the index), one message at a time in arrival order, so a kiosk's
messages are stored in the order it sent them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from pydantic import ValidationError

from device_adapters.kiosk.errors import KioskMessageError
from device_adapters.kiosk.intake import IntakeResult, KioskIntake
from device_adapters.kiosk.schema import KioskMessage
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.observations import Channel
from teleconsult.errors import TeleconsultError

__all__ = ["MEASUREMENTS_TOPIC", "KioskSubscriber", "errors_topic", "measurements_topic"]

logger = logging.getLogger(__name__)

MEASUREMENTS_TOPIC = "teleconsult/kiosk/+/measurements"
_MAX_PAYLOAD = 96 * 1024**2  # an ECG of 64 MiB in base64, and the rest
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0


def measurements_topic(device_id: str) -> str:
    return f"teleconsult/kiosk/{device_id}/measurements"


def errors_topic(device_id: str) -> str:
    return f"teleconsult/kiosk/{device_id}/errors"


def _client_options(url: str, client_id: str | None) -> dict[str, Any]:
    parsed = urlsplit(url)
    tls = parsed.scheme == "mqtts"
    options: dict[str, Any] = {
        "hostname": parsed.hostname or "127.0.0.1",
        "port": parsed.port or (8883 if tls else 1883),
        "identifier": client_id or f"teleconsult-{uuid.uuid4().hex[:12]}",
        # A named client keeps its session (and the QoS 1 messages queued while it was away).
        "clean_session": client_id is None,
        "timeout": 10.0,
    }
    if parsed.username:
        options["username"] = unquote(parsed.username)
        options["password"] = unquote(parsed.password or "")
    if tls:
        options["tls_context"] = ssl.create_default_context()
    return options


def _broker(url: str) -> str:
    """The broker's address for logs: never the password."""
    parsed = urlsplit(url)
    return (
        f"{parsed.scheme}://{parsed.hostname}:{parsed.port or (8883 if parsed.scheme == 'mqtts' else 1883)}"
    )


class KioskSubscriber:
    def __init__(
        self,
        url: str,
        intake: KioskIntake,
        audit: AuditLog,
        *,
        client_id: str | None = None,
    ) -> None:
        self.url = url
        self.intake = intake
        self.audit = audit
        self.client_id = client_id
        self.subscribed = threading.Event()  # set while subscribed (readiness, tests)
        self.handled = 0  # messages done with (stored or refused), for logs and tests

    async def run(self) -> None:
        """Subscribe and handle messages until cancelled, reconnecting after every broker failure."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                async with aiomqtt.Client(**_client_options(self.url, self.client_id)) as client:
                    await client.subscribe(MEASUREMENTS_TOPIC, qos=1)
                    logger.info("kiosk MQTT: subscribed to %s on %s", MEASUREMENTS_TOPIC, _broker(self.url))
                    delay = _BACKOFF_FIRST
                    self.subscribed.set()
                    async for message in client.messages:
                        await self._handle(client, message)
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                logger.warning(
                    "kiosk MQTT: broker %s unavailable (%s); next attempt in %.0f s",
                    _broker(self.url),
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        levels = str(message.topic).split("/")
        device_id = levels[2] if len(levels) == 4 else ""
        try:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                raise KioskMessageError("the payload is not JSON bytes")
            if len(payload) > _MAX_PAYLOAD:
                raise KioskMessageError(f"the message of {len(payload)} bytes is larger than {_MAX_PAYLOAD}")
            result = await asyncio.to_thread(self._submit, device_id, bytes(payload))
        except TeleconsultError as exc:
            await self._refuse(client, device_id, exc)
        except Exception:  # a bug must not end the subscription
            logger.exception("kiosk MQTT: message from %r on %s failed", device_id, message.topic)
            await self._refuse(client, device_id, TeleconsultError("internal error; see the teleconsult log"))
        else:
            logger.debug("kiosk MQTT: %s stored %d observations", device_id, result.stored)
        finally:
            self.handled += 1  # after the store and the audit row: tests wait on it

    def _submit(self, device_id: str, payload: bytes) -> IntakeResult:
        device_text = device_id or "?"
        try:
            device = self.intake.registry.device(device_id)
            try:
                parsed = KioskMessage.model_validate_json(payload)
            except ValidationError as exc:
                raise KioskMessageError.of(exc) from None
            result = self.intake.submit(parsed, device=device, channel=Channel.MQTT)
        except TeleconsultError as exc:
            outcome = AuditOutcome.DENIED if exc.http_status in (401, 403) else AuditOutcome.FAILURE
            detail = f"kiosk message refused ({exc.code}): {exc.message[:300]}"
            self._audit(device_text, None, outcome, patient=None, detail=detail)
            raise
        self._audit(
            device_text,
            result.device.organisation,
            AuditOutcome.SUCCESS,
            patient=result.patient.patient_key,
            detail=(
                f"kiosk {device_id}: {result.stored} observations stored, "
                f"{len(result.observations) - result.stored} duplicates, "
                f"patient {result.patient.resident_id_masked}"
            ),
        )
        return result

    def _audit(
        self,
        device_id: str,
        organisation: str | None,
        outcome: AuditOutcome,
        *,
        patient: str | None,
        detail: str,
    ) -> None:
        self.audit.record(
            AuditEvent(
                action="observation.store",
                outcome=outcome,
                interface=Interface.MQTT,
                actor=f"kiosk:{device_id}"[:64],
                actor_organisation=organisation,
                role="kiosk",
                resource=measurements_topic(device_id)[:512],
                patient_id=patient,
                detail=detail,
            )
        )

    async def _refuse(self, client: aiomqtt.Client, device_id: str, exc: TeleconsultError) -> None:
        logger.warning("kiosk MQTT: message from %r refused (%s): %s", device_id, exc.code, exc.message)
        if not device_id:
            return
        body: dict[str, Any] = {
            "device_id": device_id,
            "status": exc.http_status,
            "code": exc.code,
            "detail": exc.message,
        }
        if isinstance(exc, KioskMessageError):
            body["errors"] = exc.errors
        try:
            await client.publish(errors_topic(device_id), json.dumps(body, ensure_ascii=False), qos=1)
        except aiomqtt.MqttError as publish_error:
            logger.warning("kiosk MQTT: could not publish the refusal to %s: %s", device_id, publish_error)
