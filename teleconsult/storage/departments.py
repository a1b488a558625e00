"""Department memberships in the index database (table ``department_members``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, select, update

from teleconsult.domain.departments import DepartmentMember
from teleconsult.storage.tables import DepartmentMemberRow
from teleconsult.storage.transactions import reading, writing

__all__ = ["DepartmentStore"]

_members = DepartmentMemberRow.__table__


def _member(row: Any) -> DepartmentMember:
    return DepartmentMember(
        organisation=row.organisation, department=row.department, username=row.username, lead=bool(row.lead)
    )


class DepartmentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set_member(self, member: DepartmentMember) -> DepartmentMember:
        """Add the member, or change whether they lead the department."""
        key = (
            (_members.c.organisation == member.organisation)
            & (_members.c.department == member.department)
            & (_members.c.username == member.username)
        )
        with writing(self.engine) as conn:
            if conn.execute(select(_members.c.pk).where(key).with_for_update()).first() is None:
                conn.execute(
                    _members.insert().values(
                        organisation=member.organisation,
                        department=member.department,
                        username=member.username,
                        lead=member.lead,
                        created_at=datetime.now(UTC),
                    )
                )
            else:
                conn.execute(update(_members).where(key).values(lead=member.lead))
        return member

    def remove_member(self, organisation: str, department: str, username: str) -> bool:
        with writing(self.engine) as conn:
            result = conn.execute(
                delete(_members).where(
                    _members.c.organisation == organisation,
                    _members.c.department == department,
                    _members.c.username == username,
                )
            )
        return bool(result.rowcount)

    def members(self, organisations: frozenset[str] | None = None) -> list[DepartmentMember]:
        stmt = select(_members).order_by(_members.c.organisation, _members.c.department, _members.c.username)
        if organisations is not None:
            stmt = stmt.where(_members.c.organisation.in_(sorted(organisations)))
        with reading(self.engine) as conn:
            return [_member(row) for row in conn.execute(stmt)]

    def memberships(self, username: str) -> list[DepartmentMember]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(_members).where(_members.c.username == username)).all()
        return [_member(row) for row in rows]

    def department(self, organisation: str, department: str) -> list[DepartmentMember]:
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(_members)
                .where(_members.c.organisation == organisation, _members.c.department == department)
                .order_by(_members.c.username)
            ).all()
        return [_member(row) for row in rows]
