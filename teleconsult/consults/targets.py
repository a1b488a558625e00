"""Resolving and checking who a consult is addressed to, and who hears when it is overdue.

Addressing a consult to nobody would leave it waiting unseen until it is
overdue, so a target is checked when the consult is made or reassigned: the
organisation exists, the named specialist is an active specialist there, a
department has specialist members, a pool has specialists at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from teleconsult.domain.consults import Consult, Target
from teleconsult.domain.departments import check_department_code
from teleconsult.domain.identity import Role, User
from teleconsult.errors import InvalidConsultError
from teleconsult.storage.departments import DepartmentStore
from teleconsult.storage.identity import IdentityStore

__all__ = ["Escalation", "TargetResolver"]


@dataclass(frozen=True, slots=True)
class Escalation:
    """Who an overdue consult is escalated to, and as what."""

    recipients: tuple[str, ...]
    via: str  # "department_lead", "organisation_admin" or "none"


class TargetResolver:
    def __init__(self, identity: IdentityStore, departments: DepartmentStore) -> None:
        self.identity = identity
        self.departments = departments

    def resolve(
        self,
        requester_organisation: str,
        *,
        organisation: str | None,
        department: str | None,
        specialist: str | None,
    ) -> Target:
        """The target named, checked; without an organisation, the top of the requester's tree."""
        tree = self.identity.organisation_tree()
        if specialist:
            user = self.identity.user(specialist)
            if user is None or user.disabled or user.role is not Role.SPECIALIST:
                raise InvalidConsultError(f"{specialist} is not an active specialist; name one who is")
            if organisation and organisation != user.organisation:
                raise InvalidConsultError(
                    f"specialist {specialist} belongs to {user.organisation}, not {organisation}"
                )
            organisation = user.organisation
        if organisation is None:
            organisation = _root(requester_organisation, tree)
        if organisation not in tree:
            raise InvalidConsultError(f"organisation {organisation} does not exist")
        if department:
            try:
                check_department_code(department)
            except ValueError as exc:
                raise InvalidConsultError(str(exc)) from exc
            members = {m.username for m in self.departments.department(organisation, department)}
            if not any(user.username in members for user in self._specialists(organisation)):
                raise InvalidConsultError(
                    f"department {department} of {organisation} has no specialists; an admin adds them "
                    f"with PUT /api/departments/{organisation}/{department}/members/<username>"
                )
        elif not specialist and not self._specialists(organisation):
            raise InvalidConsultError(
                f"organisation {organisation} has no specialists to take the consult; name another target"
            )
        return Target(organisation=organisation, department=department or None, specialist=specialist or None)

    def escalation(self, consult: Consult) -> Escalation:
        """The department's leads; else the admins of the target organisation (or of the nearest above)."""
        target = consult.target
        active = {u.username: u for u in self.identity.users() if not u.disabled}
        if target.department:
            departments = [(target.organisation, target.department)]
        else:
            person = consult.assignee or target.specialist
            departments = (
                [(m.organisation, m.department) for m in self.departments.memberships(person)]
                if person
                else []
            )
        leads = {
            member.username
            for organisation, department in departments
            if organisation == target.organisation
            for member in self.departments.department(organisation, department)
            if member.lead and member.username in active
        }
        if leads:
            return Escalation(tuple(sorted(leads)), "department_lead")
        tree = self.identity.organisation_tree()
        organisation: str | None = target.organisation
        while organisation is not None:
            admins = sorted(
                u.username for u in active.values() if u.role is Role.ADMIN and u.organisation == organisation
            )
            if admins:
                return Escalation(tuple(admins), "organisation_admin")
            organisation = tree.get(organisation)
        return Escalation((), "none")

    def _specialists(self, organisation: str) -> list[User]:
        return [
            u
            for u in self.identity.users()
            if u.role is Role.SPECIALIST and u.organisation == organisation and not u.disabled
        ]


def _root(organisation: str, tree: dict[str, str | None]) -> str:
    seen = {organisation}
    while (parent := tree.get(organisation)) is not None and parent not in seen:
        seen.add(parent)
        organisation = parent
    return organisation
