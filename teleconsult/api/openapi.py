"""The OpenAPI document at /openapi.json (and /docs): every error answer documented as it is sent.

FastAPI documents what routes declare, and a 422 body of its own shape
(``{"detail": [...]}``) that teleconsult never sends. Whenever FastAPI has built
the document, ``install_openapi`` rewrites it so that it matches what
clients receive:

- every 4xx/5xx answer is ``application/problem+json`` (RFC 9457) with the
  ``Problem`` schema, validation errors (422) with their ``errors`` list;
- every operation that needs a bearer token documents ``401`` with its
  ``WWW-Authenticate`` header, and ``503`` with ``Retry-After``: checking the
  token reads the index, which may be unreachable (``problems.py``);
- the validation schemas FastAPI added for its own 422 body are dropped.

Routes still declare what is particular to them (``403`` for roles,
``404``, ``406`` ...) with a description; this module only supplies the
body those answers share. Error bodies a route documents itself (the
STOW-RS Store Instances Response of a 409) are left as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from teleconsult.api.problems import PROBLEM_JSON

__all__ = ["FieldError", "Problem", "install_openapi", "problem_response"]

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_UNAUTHORISED = "No valid bearer token (missing, expired or forged): sign in at POST /api/auth/token"
_UNREACHABLE = "The index (database) cannot be reached, as while it restarts: nothing changed, retry later"


class FieldError(BaseModel):
    """One invalid field of a request (validation errors only)."""

    field: str = Field(description="where: body.password, query.limit ...")
    message: str


class Problem(BaseModel):
    """An error as RFC 9457 problem details, with teleconsult's fixed ``code``."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What failed and what to do next, for people")
    instance: str = Field(description="The path of the request")
    code: str = Field(description="Fixed slug, e.g. invalid-request, not-found, unauthenticated")
    errors: list[FieldError] | None = Field(default=None, description="The invalid fields (422 only)")


def problem_response(description: str) -> dict[str, Any]:
    """One documented error answer, for a route's ``responses=``."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def _is_error(status: str) -> bool:
    return status[:1] in ("4", "5")


def _document_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if operation.get("security") and "401" not in responses:
        responses["401"] = {"description": _UNAUTHORISED}
    if operation.get("security") and "503" not in responses:
        responses["503"] = {
            "description": _UNREACHABLE,
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
        }
    for status, response in responses.items():
        if not _is_error(status):
            continue
        if status == "422":
            # FastAPI's own validation body, which the problem handler replaces.
            if response.get("description") == "Validation Error":
                response["description"] = "Invalid fields (each named in errors)"
            response.pop("content", None)
        # Error bodies of the standard's own (the STOW-RS response of a 409) are kept.
        response.setdefault("content", {PROBLEM_JSON: {"schema": _PROBLEM_REF}})
        if status == "401":
            response.setdefault("headers", {})["WWW-Authenticate"] = {
                "description": "Bearer",
                "schema": {"type": "string"},
            }


def _drop_unused_schemas(document: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    text = str(document.get("paths", {}))
    for name in names:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)


def _rewrite(document: dict[str, Any]) -> None:
    """Document every error answer as sent; idempotent."""
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            _document_operation(operation)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    _drop_unused_schemas(document, ("HTTPValidationError", "ValidationError"))


def install_openapi(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so the document FastAPI builds (and caches) says what is really sent."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        _rewrite(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
