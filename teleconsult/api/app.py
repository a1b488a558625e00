"""The FastAPI application: create_app(settings, store)."""

from __future__ import annotations

from fastapi import FastAPI

from teleconsult import __version__
from teleconsult.api import operations
from teleconsult.api.live_relay import LiveRelay
from teleconsult.api.openapi import install_openapi
from teleconsult.api.problems import install_problem_handlers
from teleconsult.api.routes import audit as audit_routes
from teleconsult.api.routes import (
    auth,
    consults,
    departments,
    fhir,
    fhir_kiosk,
    forwarding,
    report_outputs,
    reports,
)
from teleconsult.api.routes import devices as device_routes
from teleconsult.api.routes import ecg_measurements as ecg_measurement_routes
from teleconsult.api.routes import events as event_routes
from teleconsult.api.routes import kiosk as kiosk_routes
from teleconsult.api.routes import live as live_routes
from teleconsult.api.routes import qido as dicomweb_qido
from teleconsult.api.routes import referrals as referral_routes
from teleconsult.api.routes import stow as dicomweb_stow
from teleconsult.api.routes import wado as dicomweb_wado
from teleconsult.api.web_client import mount_web_client
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.media.registry import SessionRegistry
from teleconsult.security import load_secret_key
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore

__all__ = ["create_app"]


def create_app(settings: Settings, store: InstanceStore) -> FastAPI:
    app = FastAPI(
        title="teleconsult",
        version=__version__,
        description="Remote diagnosis and teleconsultation for county medical communities.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.identity = IdentityStore(store.index.engine)
    app.state.audit = AuditLog(store.index.engine)
    app.state.secret_key = load_secret_key(settings)
    if settings.replica_url:  # several replicas: live sessions are found, and relayed to, wherever they are
        app.state.live_registry = SessionRegistry(store.index.engine, settings.replica_url)
        app.add_middleware(LiveRelay, owner=app)
    install_problem_handlers(app)
    install_openapi(app)
    app.include_router(auth.router)
    app.include_router(forwarding.router)
    app.include_router(audit_routes.router)
    app.include_router(dicomweb_qido.router)
    app.include_router(dicomweb_wado.router)
    app.include_router(dicomweb_stow.router)
    app.include_router(consults.router)
    app.include_router(reports.router)
    app.include_router(departments.router)
    app.include_router(report_outputs.router)
    app.include_router(fhir.router)
    app.include_router(event_routes.router)
    app.include_router(referral_routes.router)
    app.include_router(device_routes.router)
    app.include_router(ecg_measurement_routes.router)
    app.include_router(kiosk_routes.router)
    app.include_router(fhir_kiosk.router)
    app.include_router(live_routes.router)
    app.include_router(operations.router)

    # Last: the browser app at /, never in front of a route above (or one added later).
    mount_web_client(app)
    return app
