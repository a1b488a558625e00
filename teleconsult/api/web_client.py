"""The browser app (``web_client/static``) at ``/``, behind every API route, with security headers.

``mount_web_client(app)`` is called last in ``create_app``. The mount at
``/`` answers only HTTP paths whose first segment no route of the app uses:
``/api``, ``/dicomweb``, ``/fhir``, ``/healthz``, ``/metrics``, ``/docs``,
``/openapi.json`` ... are never matched by it, so an unknown ``/api/...``
path still gets the API's problem+json 404, and a wrong method on an API
path its 405, instead of a static file answer. It is not in the OpenAPI
document (mounts never are).

Every answer of the app's files carries a strict Content-Security-Policy
(scripts, styles, fonts and connections from the app's own origin only;
no inline script or style, no plugins, no framing), plus ``nosniff``,
``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``. They are set
on the app's pages only: ``/docs`` (Swagger UI) needs inline script.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Mount, get_route_path
from starlette.staticfiles import StaticFiles

from web_client import STATIC_DIR

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.types import Scope

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "mount_web_client"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "font-src 'self'",
        # 'self' covers ws(s):// on the same host and port (CSP Level 3): /api/events
        "connect-src 'self'",
        # the report PDF is previewed from a blob: URL made of the authorised fetch
        "frame-src blob:",
        "object-src 'none'",
        "media-src 'self' blob:",
        "worker-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # the app's files are small and change with a release: revalidate, never serve stale
    "Cache-Control": "no-cache",
}
# First path segments that belong to the API even before a route for them exists.
_RESERVED = frozenset({"api", "dicomweb", "fhir", "healthz", "metrics", "docs", "redoc", "openapi.json"})


class _AppFiles(StaticFiles):
    """Static files of the app, each answer with the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:  # 404 and 405 of a file: a plain answer, with the headers too
            response = PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
        response.headers.update(SECURITY_HEADERS)
        return response


class _BehindTheApi(Mount):
    """A mount at ``/`` that leaves alone every path whose first segment a route of the app uses."""

    def __init__(self, routes: list[BaseRoute], app: StaticFiles) -> None:
        super().__init__("/", app=app, name="web_client")
        self._routes = routes
        self._reserved: frozenset[str] | None = None

    def _reserved_segments(self) -> frozenset[str]:
        # Computed at the first request, when every router (included after this mount too) is in.
        if self._reserved is None:
            segments = {
                str(getattr(route, "path", "")).split("/")[1]
                for route in self._routes
                if route is not self and str(getattr(route, "path", "")).startswith("/")
            }
            self._reserved = frozenset(segments - {""}) | _RESERVED
        return self._reserved

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        first = get_route_path(scope).split("/")[1] if get_route_path(scope).startswith("/") else ""
        if first in self._reserved_segments():
            return Match.NONE, {}
        return super().matches(scope)


def mount_web_client(app: FastAPI) -> None:
    """Serve the browser app at ``/``; call after every router is included."""
    app.router.routes.append(_BehindTheApi(app.router.routes, _AppFiles(directory=STATIC_DIR, html=True)))
