"""FastAPI dependencies: settings, store, identity and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from teleconsult.config import Settings
from teleconsult.domain.identity import Principal, Role
from teleconsult.errors import AuthenticationError, PermissionDeniedError
from teleconsult.security import TokenError, decode_access_token
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore

__all__ = [
    "MAX_OFFSET",
    "PRINTABLE",
    "Caller",
    "CallerDep",
    "IdentityDep",
    "PrincipalDep",
    "SettingsDep",
    "StoreDep",
    "get_principal",
    "principal_from_token",
    "require_roles",
]

# Query and form text that reaches SQL: no C0 control characters (PostgreSQL refuses NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# Paging offsets beyond this cannot be bound as SQL integers (and page past any table).
MAX_OFFSET = 2**31 - 1

_bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


# The dependencies that only read app state are coroutines: FastAPI runs a
# plain function dependency on a worker thread, and each such hop costs a
# request about a quarter of a millisecond for nothing. ``get_principal``
# reads the database and stays a function (it runs on a worker thread).


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> InstanceStore:
    store: InstanceStore = request.app.state.store
    return store


async def get_identity(request: Request) -> IdentityStore:
    identity: IdentityStore = request.app.state.identity
    return identity


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[InstanceStore, Depends(get_store)]
IdentityDep = Annotated[IdentityStore, Depends(get_identity)]


def _token_subject(token: str | None, key: str) -> str:
    """The username a bearer token names, once its signature, audience and expiry are checked."""
    if not token:
        raise AuthenticationError("a bearer token is required: get one from POST /api/auth/token")
    try:
        claims = decode_access_token(key, token)
    except TokenError as exc:
        raise AuthenticationError("the bearer token is invalid or expired; sign in again") from exc
    return str(claims["sub"])


def _account(identity: IdentityStore, username: str) -> Principal:
    principal = identity.principal(username)
    if principal is None:
        raise AuthenticationError("the account of this token is unknown or disabled")
    return principal


def principal_from_token(token: str | None, key: str, identity: IdentityStore) -> Principal:
    """The caller a bearer token names; also used by WebSockets (token in the first message)."""
    return _account(identity, _token_subject(token, key))


def get_principal(
    request: Request, identity: IdentityDep, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    principal = principal_from_token(token, request.app.state.secret_key, identity)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True, slots=True)
class Caller:
    """A bearer token already checked; its account is read by the route, on its own worker thread.

    ``PrincipalDep`` reads the account on a worker thread of its own before
    the route's body runs on another: a thread hop, a quarter of a
    millisecond, on every DICOMweb request a viewer makes by the hundred.
    Routes with a plain ``def`` body take ``CallerDep`` and call
    ``principal()`` first thing, so an unknown or disabled account is
    still a 401 before anything else is looked at.
    """

    request: Request
    username: str

    def principal(self) -> Principal:
        principal = _account(self.request.app.state.identity, self.username)
        self.request.state.principal = principal
        return principal


async def get_caller(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> Caller:
    # Checking the signature is a few microseconds of CPU: no I/O on the event loop.
    return Caller(request, _token_subject(token, request.app.state.secret_key))


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only ``roles`` through (403 for others)."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise PermissionDeniedError(
                f"this needs one of the roles {', '.join(r.value for r in roles)}; "
                f"{principal.username} is {principal.role.value}"
            )
        return principal

    return check
