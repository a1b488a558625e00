"""RFC 9457 problem+json for every error outside DICOMweb bodies."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from teleconsult.api.auditing import audit_request
from teleconsult.audit import AuditOutcome
from teleconsult.errors import (
    AuthenticationError,
    IndexUnavailableError,
    PermissionDeniedError,
    StorageFullError,
    TeleconsultError,
)
from teleconsult.storage.transactions import is_disk_full

__all__ = ["install_problem_handlers", "problem"]

PROBLEM_JSON = "application/problem+json"
# When a client may try again after the index could not be reached.
RETRY_AFTER_SECONDS = 5

logger = logging.getLogger(__name__)


def problem(request: Request, status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://teleconsult.invalid/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(TeleconsultError)
    async def _ours(request: Request, exc: TeleconsultError) -> JSONResponse:
        if isinstance(exc, AuthenticationError | PermissionDeniedError) and not getattr(
            request.state, "audited", False
        ):
            # Refused attempts are part of the trail, not only what succeeded.
            await run_in_threadpool(
                audit_request, request, "access", AuditOutcome.DENIED, detail=exc.message[:200]
            )
        response = problem(request, exc.http_status, exc.code.replace("-", " "), exc.message, exc.code)
        if isinstance(exc, AuthenticationError):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _index_unreachable(request: Request, exc: DBAPIError) -> JSONResponse | None:
        # The database server is down, restarting or unreachable: the request can be tried again,
        # as a C-STORE refused 0xA701 can. Nothing was committed for it.
        cause = type(exc.orig).__name__
        if isinstance(request, WebSocket):  # a socket's handler failed past its handshake
            logger.error("WEBSOCKET %s: the index cannot be reached (%s)", request.url.path, cause)
            with contextlib.suppress(RuntimeError, OSError):
                await request.close(1011)
            return None
        if is_disk_full(exc):
            logger.error("%s %s: the index's disk is full (%s)", request.method, request.url.path, cause)
            return problem(
                request,
                StorageFullError.http_status,
                "storage full",
                "the index's disk is full; nothing was changed, retry once space has been freed",
                StorageFullError.code,
            )
        logger.error("%s %s: the index cannot be reached (%s)", request.method, request.url.path, cause)
        response = problem(
            request,
            IndexUnavailableError.http_status,
            "index unavailable",
            "the index (database) cannot be reached; nothing was changed, retry later",
            IndexUnavailableError.code,
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        response = problem(
            request, exc.status_code, str(exc.detail), str(exc.detail), f"http-{exc.status_code}"
        )
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(part) for part in error.get("loc", ())), "message": error.get("msg", "")}
            for error in exc.errors()
        ]
        return problem(
            request, 422, "invalid request", "the request has invalid fields", "validation", errors=errors
        )
