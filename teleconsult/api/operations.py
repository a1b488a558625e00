"""What an orchestrator and a monitoring system ask of a running server: liveness, readiness, metrics.

Liveness (``/livez``) answers as long as the process serves HTTP at all, so
a restart is only triggered by a hung process, never by a database that is
briefly away (restarting would not bring it back). Readiness (``/readyz``)
says whether this replica should get traffic: the index answers, its
schema is the one this code was written for (a replica started before
``teleconsult db upgrade`` ran is not ready), and DICOM files can be
stored (the data directory is writable, or the S3 bucket answers).
``/healthz`` stays what it always was, liveness plus the index, for the
checks that already use it.

``/metrics`` adds, to the counters the code increments (``teleconsult.metrics``),
gauges read at scrape time from the live objects of this process: forward
queue rows by status, WebSocket clients, live sessions and their peer
connections, free space under the data directory.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from teleconsult import __version__
from teleconsult import metrics as service_metrics
from teleconsult.errors import IndexUnavailableError
from teleconsult.events import Event
from teleconsult.metrics import CONTENT_TYPE_LATEST
from teleconsult.storage.migrate import alembic_config
from teleconsult.storage.store import InstanceStore

__all__ = ["LiveStateCollector", "count_events", "router"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def _count_events(app: FastAPI) -> AsyncIterator[None]:
    unsubscribe = app.state.store.bus.subscribe(count_events)
    try:
        yield
    finally:
        unsubscribe()


router = APIRouter(tags=["operations"], lifespan=_count_events)

_heads_lock = threading.Lock()
_heads: frozenset[str] | None = None


def _expected_heads() -> frozenset[str]:
    """The schema revisions this code expects (read from the migration scripts once)."""
    global _heads
    with _heads_lock:
        if _heads is None:
            _heads = frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
        return _heads


@router.get("/livez", summary="Liveness: the process answers (no dependency is checked)")
def livez() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    summary="Readiness: the index answers, its schema is current, files can be stored",
    responses={503: {"description": "Not ready; `checks` says which check failed and why"}},
)
def readyz(request: Request) -> JSONResponse:
    store: InstanceStore = request.app.state.store
    checks: dict[str, str] = {}
    try:
        with store.index.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
        checks["index"] = "ok"
        expected = _expected_heads()
        if current == expected:
            checks["schema"] = "ok"
        else:
            checks["schema"] = (
                f"at revision {', '.join(sorted(current)) or 'none'}, this version needs "
                f"{', '.join(sorted(expected))}: run teleconsult db upgrade"
            )
    except Exception as exc:  # any failure to reach the index means: send no traffic here
        checks["index"] = f"cannot be reached ({type(exc).__name__})"
    try:
        checks["storage"] = store.files.unavailable() or "ok"
    except Exception as exc:  # a storage that cannot even be asked is not ready either
        checks["storage"] = f"cannot be checked ({type(exc).__name__})"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/healthz", summary="Liveness and index reachability")
def healthz(request: Request) -> dict[str, Any]:
    store: InstanceStore = request.app.state.store
    try:
        with store.index.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise IndexUnavailableError("the index cannot be reached") from exc
    return {"status": "ok", "version": __version__}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    collector = LiveStateCollector(request.app)
    return Response(service_metrics.exposition(collector), media_type=CONTENT_TYPE_LATEST)


class LiveStateCollector(Collector):
    """Gauges of this process's live objects, read when Prometheus scrapes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.app.state
        store: InstanceStore = state.store
        queue = GaugeMetricFamily(
            "teleconsult_forward_queue_rows",
            "Forwarding queue rows (C-STORE to PACS) by status.",
            labels=["status"],
        )
        try:
            for status, count in sorted(store.outbox.counts().items()):
                queue.add_metric([status], count)
        except Exception as exc:  # an index that is away must not fail the whole scrape
            logger.warning("metrics: the forwarding queue could not be counted (%s)", type(exc).__name__)
        else:
            yield queue
        notifications = getattr(state, "notifications", None)
        if notifications is not None:
            yield GaugeMetricFamily(
                "teleconsult_websocket_clients",
                "WebSocket clients connected to /api/events in this process.",
                value=len(notifications.connections()),
            )
        media = getattr(state, "media", None)
        if media is not None:
            yield GaugeMetricFamily(
                "teleconsult_live_sessions",
                "Live exam sessions running in this process.",
                value=len(media.running()),
            )
            yield GaugeMetricFamily(
                "teleconsult_live_peer_connections",
                "WebRTC peer connections of the live sessions in this process.",
                value=media.peer_connections(),
            )
        try:
            usage = os.statvfs(store.settings.data_dir)
        except OSError:
            return
        yield GaugeMetricFamily(
            "teleconsult_storage_free_bytes",
            "Free bytes on the filesystem of the data directory (C-STORE answers A700 when it is full).",
            value=usage.f_bavail * usage.f_frsize,
        )


def count_events(event: Event) -> None:
    """Bus subscriber: every event published in this process (gateway workers' events are relayed here)."""
    service_metrics.EVENTS.labels(event.type).inc()
