"""Departments and their members, for addressing consults and escalating overdue ones.

Anyone signed in may list departments (a township addresses its consult to
a county department); admins set members of departments of organisations in
their scope, and flag leads, who receive the escalation of overdue consults.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from teleconsult.api.consult_schemas import (
    CODE_PATTERN,
    USERNAME_PATTERN,
    DepartmentMemberPublic,
    DepartmentMemberUpdate,
)
from teleconsult.api.consulting import ConsultsDep, audited
from teleconsult.api.deps import IdentityDep, PrincipalDep, require_roles
from teleconsult.api.openapi import problem_response
from teleconsult.domain.departments import DepartmentMember
from teleconsult.domain.identity import Principal, Role
from teleconsult.errors import InvalidConsultError, NotFoundError
from teleconsult.storage.identity import IdentityStore

__all__ = ["router"]

router = APIRouter(prefix="/api/departments", tags=["consults"])

AdminDep = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Organisation = Annotated[str, Path(max_length=64, pattern=CODE_PATTERN)]
Department = Annotated[str, Path(max_length=64, pattern=CODE_PATTERN)]
Username = Annotated[str, Path(max_length=64, pattern=USERNAME_PATTERN)]

_MEMBER_ERRORS = {
    400: problem_response("The body is not JSON"),
    403: problem_response("Not an admin"),
    404: problem_response("The organisation is outside the admin's scope, or the member does not exist"),
    422: problem_response("The user does not belong to that organisation"),
}


def _public(member: DepartmentMember) -> DepartmentMemberPublic:
    return DepartmentMemberPublic(
        organisation=member.organisation,
        department=member.department,
        username=member.username,
        lead=member.lead,
    )


def _check_member(identity: IdentityStore, principal: Principal, organisation: str, username: str) -> None:
    if not principal.can_see(organisation):
        raise NotFoundError(
            f"organisation {organisation} does not exist or is outside {principal.username}'s scope"
        )
    user = identity.user(username)
    if user is None or user.organisation != organisation:
        raise InvalidConsultError(f"user {username} is not a member of organisation {organisation}")


@router.get(
    "",
    response_model=list[DepartmentMemberPublic],
    summary="Department members (all organisations, or one)",
    responses={422: problem_response("Invalid organisation code")},
)
def list_members(
    _principal: PrincipalDep,
    service: ConsultsDep,
    organisation: Annotated[str | None, Query(max_length=64, pattern=CODE_PATTERN)] = None,
) -> list[DepartmentMemberPublic]:
    members = service.departments.members(None if organisation is None else frozenset({organisation}))
    return [_public(member) for member in members]


@router.put(
    "/{organisation}/{department}/members/{username}",
    response_model=DepartmentMemberPublic,
    summary="Add a member to a department, or change whether they lead it (admins)",
    responses=_MEMBER_ERRORS,
)
def set_member(
    organisation: Organisation,
    department: Department,
    username: Username,
    body: DepartmentMemberUpdate,
    request: Request,
    principal: AdminDep,
    identity: IdentityDep,
    service: ConsultsDep,
) -> DepartmentMemberPublic:
    with audited(request, principal, "department.update") as note:
        note.detail = f"{username} in department {department} of {organisation}, lead={body.lead}"
        _check_member(identity, principal, organisation, username)
        member = service.departments.set_member(
            DepartmentMember(organisation, department, username, body.lead)
        )
    return _public(member)


@router.delete(
    "/{organisation}/{department}/members/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a member from a department (admins)",
    responses=_MEMBER_ERRORS,
)
def remove_member(
    organisation: Organisation,
    department: Department,
    username: Username,
    request: Request,
    principal: AdminDep,
    service: ConsultsDep,
) -> Response:
    with audited(request, principal, "department.delete") as note:
        note.detail = f"{username} from department {department} of {organisation}"
        if not principal.can_see(organisation) or not service.departments.remove_member(
            organisation, department, username
        ):
            raise NotFoundError(f"{username} is not a member of department {department} of {organisation}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
