"""OAuth2 password flow (and refresh tokens) at POST /api/auth/token."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import PRINTABLE, IdentityDep, PrincipalDep, SettingsDep
from teleconsult.audit import AuditOutcome
from teleconsult.domain.identity import Principal
from teleconsult.errors import AuthenticationError
from teleconsult.security import issue_access_token

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    refresh_token: str


class MePublic(BaseModel):
    username: str
    role: str
    organisation: str
    visible_organisations: list[str]


@router.post(
    "/auth/token",
    response_model=TokenPublic,
    summary="Sign in (OAuth2 password grant) or refresh (refresh_token grant)",
    responses={
        401: {"description": "Wrong credentials, or an invalid refresh token"},
        503: {"description": "The index (database) cannot be reached: retry later"},
    },
)
def token(
    request: Request,
    settings: SettingsDep,
    identity: IdentityDep,
    grant_type: Annotated[Literal["password", "refresh_token"], Form()] = "password",
    username: Annotated[str, Form(max_length=64, pattern=PRINTABLE)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    refresh_token: Annotated[str, Form(max_length=256, pattern=PRINTABLE)] = "",
) -> TokenPublic:
    if grant_type == "refresh_token":
        user = identity.use_refresh_token(refresh_token) if refresh_token else None
        if user is None:
            raise AuthenticationError("the refresh token is invalid, used or expired; sign in again")
    else:
        user = identity.authenticate(username, password) if username and password else None
        if user is None:
            # Record the name that was tried (never the password); the problem
            # handler then does not record the same refusal a second time.
            audit_request(
                request,
                "login",
                AuditOutcome.DENIED,
                actor=username[:64] or "anonymous",
                detail="wrong credentials",
            )
            request.state.audited = True
            raise AuthenticationError("wrong username or password, or the account is disabled")
        # With the user's organisation and role, so their admins see the sign-in.
        signed_in = Principal(username=user.username, role=user.role, organisation=user.organisation)
        audit_request(request, "login", AuditOutcome.SUCCESS, principal=signed_in)
    access, expires_in = issue_access_token(
        request.app.state.secret_key, user.username, user.role.value, settings.access_token_minutes
    )
    return TokenPublic(
        access_token=access,
        expires_in=expires_in,
        refresh_token=identity.issue_refresh_token(user.username, settings.refresh_token_hours),
    )


@router.get("/me", response_model=MePublic, summary="The signed-in user and what they may see")
def me(principal: PrincipalDep) -> MePublic:
    return MePublic(
        username=principal.username,
        role=principal.role.value,
        organisation=principal.organisation,
        visible_organisations=list(principal.scope),
    )
