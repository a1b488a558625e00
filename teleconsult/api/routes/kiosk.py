"""Health kiosks: measurements in (``POST /api/kiosk/measurements``), patient records out.

A kiosk authenticates with its device token (``Authorization: Bearer
<device id>.<code>``, printed by ``teleconsult kiosk token DEVICE``), not a
user's: it has no user, and its organisation is the one it is registered
to. Users read kiosk patients and observations by organisation scope, like
studies: a patient none of whose observations were made in the caller's
scope answers 404, as an unknown one. Every write (accepted or refused)
and every read is audited; resident ID numbers appear only masked.

This router's lifespan runs the MQTT subscriber when ``TELECONSULT_MQTT_URL``
is set, so it runs wherever the HTTP app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from device_adapters.kiosk.devices import RegisteredDevice
from device_adapters.kiosk.intake import IntakeResult, KioskIntake
from device_adapters.kiosk.mqtt import KioskSubscriber
from device_adapters.kiosk.schema import KioskMessage
from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import MAX_OFFSET, PrincipalDep
from teleconsult.api.kiosk_schemas import (
    KioskIntakePublic,
    KioskObservationPublic,
    KioskPatientPublic,
    KioskPatientRecordPublic,
)
from teleconsult.api.openapi import problem_response
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.identity import Principal
from teleconsult.domain.observations import Channel
from teleconsult.errors import NotFoundError, TeleconsultError
from teleconsult.storage.kiosk import KioskStore

__all__ = ["KIOSK_PATH", "kiosk_intake", "kiosk_lifespan", "router"]

KIOSK_PATH = "/api/kiosk"
_PATIENT_KEY = r"^[0-9a-f]{32}$"
_lock = threading.Lock()


def kiosk_intake(app: FastAPI) -> KioskIntake:
    """The app's kiosk intake (device registry, keys, thresholds), made on first use."""
    with _lock:
        intake: KioskIntake | None = getattr(app.state, "kiosk_intake", None)
        if intake is None:
            intake = KioskIntake(
                app.state.settings, app.state.store, app.state.identity, app.state.secret_key
            )
            app.state.kiosk_intake = intake
        return intake


@asynccontextmanager
async def kiosk_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Subscribe to kiosk measurements over MQTT for as long as the app serves (when configured)."""
    settings = app.state.settings
    task: asyncio.Task[None] | None = None
    if settings.mqtt_url:
        subscriber = KioskSubscriber(
            settings.mqtt_url, kiosk_intake(app), app.state.audit, client_id=settings.mqtt_client_id
        )
        app.state.kiosk_subscriber = subscriber
        task = asyncio.create_task(subscriber.run(), name="kiosk-mqtt")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _audit_device(
    request: Request,
    outcome: AuditOutcome,
    detail: str,
    *,
    device: RegisteredDevice | None,
    patient: str | None,
) -> None:
    audit: AuditLog = request.app.state.audit
    audit.record(
        AuditEvent(
            action="observation.store",
            outcome=outcome,
            interface=Interface.HTTP,
            actor=f"kiosk:{device.device_id}" if device else "anonymous",
            actor_organisation=device.organisation if device else None,
            role="kiosk" if device else None,
            source_address=request.client.host if request.client else None,
            resource=f"{request.method} {request.url.path}",
            patient_id=patient,
            detail=detail[:1024],
        )
    )


async def _refused(request: Request, detail: str) -> None:
    device = getattr(request.state, "kiosk_device", None)
    await asyncio.to_thread(_audit_device, request, AuditOutcome.FAILURE, detail, device=device, patient=None)


class _AuditedIntakeRoute(APIRoute):
    """Records refused kiosk messages too: FastAPI answers invalid bodies before the route runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def audited(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()[:10])
                await _refused(request, f"kiosk message refused (422): invalid fields {fields}")
                raise
            except HTTPException as exc:  # a body that cannot be parsed (400)
                await _refused(request, f"kiosk message refused ({exc.status_code}): {exc.detail}")
                raise

        return audited


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="KioskDeviceToken",
    description="A kiosk's device token: <device id>.<code>, printed by `teleconsult kiosk token DEVICE`",
)


async def _device(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> RegisteredDevice:
    intake = await asyncio.to_thread(kiosk_intake, request.app)
    device = intake.registry.authenticate(credentials.credentials if credentials else None)
    request.state.kiosk_device = device
    return device


DeviceDep = Annotated[RegisteredDevice, Depends(_device)]

router = APIRouter(prefix=KIOSK_PATH, tags=["health kiosks"], lifespan=kiosk_lifespan)
_intake_router = APIRouter(route_class=_AuditedIntakeRoute)


def _submit(request: Request, device: RegisteredDevice, message: KioskMessage) -> IntakeResult:
    try:
        result = kiosk_intake(request.app).submit(message, device=device, channel=Channel.HTTP)
    except TeleconsultError as exc:
        outcome = AuditOutcome.DENIED if exc.http_status in (401, 403) else AuditOutcome.FAILURE
        _audit_device(
            request, outcome, f"kiosk message refused ({exc.http_status} {exc.code}): {exc.message[:400]}",
            device=device, patient=None,
        )  # fmt: skip
        request.state.audited = True
        raise
    _audit_device(
        request,
        AuditOutcome.SUCCESS,
        f"kiosk {device.device_id}: {result.stored} observations stored, "
        f"{len(result.observations) - result.stored} duplicates, patient {result.patient.resident_id_masked}",
        device=device,
        patient=result.patient.patient_key,
    )
    return result


@_intake_router.post(
    "/measurements",
    status_code=201,
    response_model=KioskIntakePublic,
    summary="Store a kiosk visit's measurements (and ECG) for a villager, by resident ID number",
    responses={
        400: problem_response("The body cannot be parsed (not UTF-8 JSON)"),
        401: problem_response("No kiosk token, or not the token of a registered kiosk"),
        403: problem_response(
            "The kiosk is not registered (TELECONSULT_KIOSK_DEVICES), its organisation does not exist, or "
            "the message names another device"
        ),
        409: problem_response(
            "This kiosk already sent this kind of measurement at this time with other values"
        ),
        413: problem_response("The ECG is larger than TELECONSULT_ECG_MAX_FILE_BYTES"),
        422: problem_response(
            "Invalid message: a field, unit or impossible value (each named in errors), a wrong resident ID "
            "check character, a time in the future, or an ECG that cannot be imported (quarantined)"
        ),
        503: problem_response("The index cannot be reached; send again later"),
        507: problem_response("The store is full; send again later"),
    },
)
async def post_measurements(request: Request, device: DeviceDep, message: KioskMessage) -> KioskIntakePublic:
    result = await asyncio.to_thread(_submit, request, device, message)
    return KioskIntakePublic(
        patient=KioskPatientPublic.of(result.patient),
        observations=[
            {
                "id": observation.observation_id,
                "type": observation.kind.value,
                "outcome": "stored" if fresh else "duplicate",
                "alerts": list(observation.alerts),
            }
            for observation, fresh in result.observations
        ],
        alert_event_id=result.alert_id,
    )


router.include_router(_intake_router)


def _utc(text: str) -> datetime:
    """``since`` in UTC; 422 for anything but an ISO 8601 time with its offset that UTC can hold.

    Parsed here rather than by pydantic, which would also take a number as a Unix time.
    """
    problem = "give since as ISO 8601 with its UTC offset, e.g. 2026-11-24T08:00:00+08:00"
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        since = None
    if since is not None and since.tzinfo is not None:
        try:
            return since.astimezone(UTC)
        except OverflowError:
            problem = "since lies outside the years 1-9999 once in UTC"
    raise RequestValidationError([{"loc": ("query", "since"), "msg": problem, "type": "value_error"}])


def _store(request: Request) -> KioskStore:
    return kiosk_intake(request.app).observations


def _patient_or_404(
    request: Request, principal: Principal, patient_key: str, action: str
) -> KioskPatientPublic:
    patient = _store(request).patient(patient_key, principal.visible_organisations)
    if patient is None:
        audit_request(
            request, action, AuditOutcome.DENIED, principal=principal, patient_id=patient_key,
            detail="no kiosk patient with this key in the caller's scope",
        )  # fmt: skip
        raise NotFoundError(f"no kiosk patient {patient_key} that you may see")
    return KioskPatientPublic.of(patient)


PatientKey = Annotated[str, Path(pattern=_PATIENT_KEY, description="The patient's key (32 hex digits)")]


@router.get(
    "/patients/{patient_key}/observations",
    response_model=KioskPatientRecordPublic,
    summary="A kiosk patient and their observations made in the caller's organisation scope, newest first",
    responses={
        404: problem_response("No such patient, or none of their observations is in the caller's scope")
    },
)
def patient_observations(
    request: Request,
    principal: PrincipalDep,
    patient_key: PatientKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> KioskPatientRecordPublic:
    patient = _patient_or_404(request, principal, patient_key, "observation.read")
    observations = _store(request).observations_of(patient_key, principal.visible_organisations, limit=limit)
    audit_request(
        request, "observation.read", AuditOutcome.SUCCESS, principal=principal, patient_id=patient_key,
        detail=f"{len(observations)} kiosk observations of patient {patient.resident_id_masked}",
    )  # fmt: skip
    return KioskPatientRecordPublic(
        patient=patient, observations=[KioskObservationPublic.of(o) for o in observations]
    )


@router.get(
    "/observations",
    response_model=list[KioskObservationPublic],
    summary="Kiosk observations made in the caller's organisation scope, newest first (a clinic's worklist)",
)
def recent_observations(
    request: Request,
    principal: PrincipalDep,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only those measured at or after: ISO 8601 with its UTC offset",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    alerts_only: Annotated[bool, Query(description="Only values past an alert threshold")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[KioskObservationPublic]:
    after = None if since is None else _utc(since)
    found = _store(request).recent(
        principal.visible_organisations, since=after, alerts_only=alerts_only, limit=limit, offset=offset
    )
    audit_request(
        request, "observation.search", AuditOutcome.SUCCESS, principal=principal,
        detail=f"{len(found)} kiosk observations of {len({p.patient_key for _, p in found})} patients",
    )  # fmt: skip
    return [KioskObservationPublic.of(observation) for observation, _ in found]
