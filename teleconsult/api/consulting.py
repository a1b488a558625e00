"""What the consult, report and department routes share: services, auditing, the overdue thread.

The services are made once per app, on first use, from what ``create_app``
already holds (index engine, event bus, identity store, secret key), so
wiring them in needs no change to ``create_app`` beyond including the
routers. The consults router's lifespan runs the overdue check.

Every read and write of a consult or report is audited before the answer
is sent, with the consult's study and patient, including refusals: a
consult outside the caller's view is recorded ``denied`` (and answered 404,
as an unknown one), a refused change ``denied`` (403) or ``failure`` (409,
422).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from teleconsult.api.auditing import audit_request
from teleconsult.audit import AuditOutcome
from teleconsult.consults import ConsultService, HiddenError, OverdueMonitor, ReportService
from teleconsult.domain.consults import Consult
from teleconsult.domain.identity import Principal
from teleconsult.errors import PermissionDeniedError, TeleconsultError

__all__ = [
    "AuditNote",
    "ConsultsDep",
    "ReportsDep",
    "audited",
    "consult_lifespan",
    "consult_service",
    "report_service",
]

_lock = threading.Lock()


def consult_service(app: FastAPI) -> ConsultService:
    """The app's consult service, made on first use."""
    with _lock:
        service: ConsultService | None = getattr(app.state, "consults", None)
        if service is None:
            store = app.state.store
            service = ConsultService(store.index.engine, store.bus, app.state.settings, app.state.identity)
            app.state.consults = service
        return service


def report_service(app: FastAPI) -> ReportService:
    service: ReportService | None = getattr(app.state, "reports", None)
    if service is None:
        consults = consult_service(app)
        with _lock:
            service = getattr(app.state, "reports", None)
            if service is None:
                service = ReportService(consults, app.state.secret_key)
                app.state.reports = service
    return service


async def _consults(request: Request) -> ConsultService:
    return consult_service(request.app)


async def _reports(request: Request) -> ReportService:
    return report_service(request.app)


ConsultsDep = Annotated[ConsultService, Depends(_consults)]
ReportsDep = Annotated[ReportService, Depends(_reports)]


@asynccontextmanager
async def consult_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the overdue check while the app runs (``TELECONSULT_CONSULT_OVERDUE_CHECK_SECONDS``)."""
    interval = app.state.settings.consult_overdue_check_seconds
    monitor = OverdueMonitor(consult_service(app), interval) if interval > 0 else None
    if monitor is not None:
        monitor.start()
    try:
        yield
    finally:
        if monitor is not None:
            await asyncio.to_thread(monitor.stop)


@dataclass
class AuditNote:
    """What the audit row of this request names; filled in as the route learns it."""

    study_instance_uid: str | None = None
    patient_id: str | None = None
    detail: str = ""

    def consult(self, consult: Consult) -> None:
        self.study_instance_uid = consult.study_instance_uid
        self.patient_id = consult.patient_id


@contextmanager
def audited(request: Request, principal: Principal, action: str, **known: Any) -> Iterator[AuditNote]:
    """Record the request's outcome in the audit trail: success, denied or failure."""
    note = AuditNote(**known)
    try:
        yield note
    except HiddenError as exc:
        audit_request(
            request,
            action,
            AuditOutcome.DENIED,
            principal=principal,
            study_instance_uid=exc.study_instance_uid,
            patient_id=exc.patient_id,
            detail=exc.detail,
        )
        raise
    except TeleconsultError as exc:
        denied = isinstance(exc, PermissionDeniedError)
        audit_request(
            request,
            action,
            AuditOutcome.DENIED if denied else AuditOutcome.FAILURE,
            principal=principal,
            study_instance_uid=note.study_instance_uid,
            patient_id=note.patient_id,
            detail=f"{note.detail}: {exc.message}" if note.detail else exc.message,
        )
        request.state.audited = True  # the problem handler must not record the 403 twice
        raise
    audit_request(
        request,
        action,
        AuditOutcome.SUCCESS,
        principal=principal,
        study_instance_uid=note.study_instance_uid,
        patient_id=note.patient_id,
        detail=note.detail,
    )
