"""Consults and their history in the index database.

The service (``teleconsult/consults``) decides what may happen; this module
only reads and writes rows. Every change is made inside ``writing`` with the
consult row locked (``lock``), so two specialists accepting the same pool
consult at once cannot both win: the second finds it accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, or_, select, update

from teleconsult.domain.consults import (
    Consult,
    ConsultAction,
    ConsultStatus,
    ConsultViewer,
    HistoryEntry,
    Target,
    TargetKind,
    Urgency,
    utc,
)
from teleconsult.domain.identity import Role
from teleconsult.storage.tables import ConsultHistoryRow, ConsultRow, Patient, Study
from teleconsult.storage.transactions import reading, writing

__all__ = ["ConsultFilters", "ConsultStore", "StudySummary", "visible_condition"]

_consults = ConsultRow.__table__
_history = ConsultHistoryRow.__table__
_studies = Study.__table__
_patients = Patient.__table__


@dataclass(frozen=True, slots=True)
class ConsultFilters:
    statuses: tuple[ConsultStatus, ...] = ()
    urgency: Urgency | None = None
    overdue: bool | None = None
    study_instance_uid: str | None = None
    assignee: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class StudySummary:
    """What a consult shows of its study, and the identifiers a request takes from it."""

    study_instance_uid: str
    source_organisation: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    accession_number: str
    modalities: tuple[str, ...]


def _consult(row: Any) -> Consult:
    return Consult(
        consult_id=row.consult_id,
        study_instance_uid=row.study_instance_uid,
        patient_id=row.patient_id,
        issuer_of_patient_id=row.issuer_of_patient_id,
        source_organisation=row.source_organisation,
        requested_by=row.requested_by,
        requested_at=utc(row.requested_at),
        urgency=Urgency(row.urgency),
        question=row.question,
        target=Target(
            organisation=row.target_organisation,
            department=row.target_department,
            specialist=row.target_specialist,
        ),
        assignee=row.assignee,
        status=ConsultStatus(row.status),
        status_reason=row.status_reason,
        due_at=utc(row.due_at),
        overdue_at=utc(row.overdue_at) if row.overdue_at is not None else None,
        updated_at=utc(row.updated_at),
    )


def _target_values(target: Target) -> dict[str, Any]:
    return {
        "target_kind": target.kind.value,
        "target_organisation": target.organisation,
        "target_department": target.department,
        "target_specialist": target.specialist,
    }


def visible_condition(viewer: ConsultViewer) -> ColumnElement[bool]:
    """``domain.consults.visible_to`` as SQL, for lists (a test checks that both agree)."""
    c = _consults.c
    conditions: list[ColumnElement[bool]] = [
        c.source_organisation.in_(sorted(viewer.scope)),
        c.assignee == viewer.username,
        c.target_specialist == viewer.username,
    ]
    waiting = c.status == ConsultStatus.REQUESTED.value
    if viewer.role is Role.SPECIALIST:
        conditions.append(
            and_(
                waiting,
                c.target_kind == TargetKind.POOL.value,
                c.target_organisation == viewer.organisation,
            )
        )
        for organisation, department in sorted(viewer.departments):
            conditions.append(
                and_(
                    waiting,
                    c.target_kind == TargetKind.DEPARTMENT.value,
                    c.target_organisation == organisation,
                    c.target_department == department,
                )
            )
    if viewer.role is Role.ADMIN:
        conditions.append(c.target_organisation.in_(sorted(viewer.scope)))
    for organisation, department in sorted(viewer.leads):
        conditions.append(and_(c.target_organisation == organisation, c.target_department == department))
    return or_(*conditions)


class ConsultStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing (inside ``writing(engine)``) ---------------------------------

    def insert(self, conn: Connection, consult: Consult, entry: HistoryEntry) -> int:
        pk = conn.execute(
            _consults.insert()
            .values(
                consult_id=consult.consult_id,
                study_instance_uid=consult.study_instance_uid,
                patient_id=consult.patient_id,
                issuer_of_patient_id=consult.issuer_of_patient_id,
                source_organisation=consult.source_organisation,
                requested_by=consult.requested_by,
                requested_at=consult.requested_at,
                urgency=consult.urgency.value,
                question=consult.question,
                assignee=consult.assignee,
                status=consult.status.value,
                status_reason=consult.status_reason,
                due_at=consult.due_at,
                overdue_at=consult.overdue_at,
                updated_at=consult.updated_at,
                **_target_values(consult.target),
            )
            .returning(_consults.c.pk)
        ).scalar_one()
        self.add_history(conn, pk, entry)
        return int(pk)

    def lock(self, conn: Connection, consult_id: str) -> tuple[int, Consult] | None:
        """The consult's row, locked until the transaction ends (PostgreSQL; SQLite holds the write lock)."""
        row = conn.execute(
            select(_consults).where(_consults.c.consult_id == consult_id).with_for_update()
        ).first()
        return None if row is None else (int(row.pk), _consult(row))

    def update(
        self,
        conn: Connection,
        pk: int,
        now: datetime,
        *,
        status: ConsultStatus | None = None,
        target: Target | None = None,
        **values: Any,
    ) -> None:
        changes: dict[str, Any] = {"updated_at": now, **values}
        if status is not None:
            changes["status"] = status.value
        if target is not None:
            changes.update(_target_values(target))
        conn.execute(update(_consults).where(_consults.c.pk == pk).values(**changes))

    def add_history(self, conn: Connection, pk: int, entry: HistoryEntry) -> None:
        target = {} if entry.target is None else _target_values(entry.target)
        conn.execute(
            _history.insert().values(
                consult_pk=pk,
                time=entry.time,
                actor=entry.actor[:64],
                action=entry.action.value,
                from_status=entry.from_status.value if entry.from_status else None,
                to_status=entry.to_status.value,
                assignee=entry.assignee,
                reason=entry.reason[:1024] if entry.reason else None,
                **target,
            )
        )

    def mark_overdue(self, consult_id: str, now: datetime, actor: str) -> Consult | None:
        """Flag one consult overdue, once: None if it was flagged already, or is no longer open."""
        with writing(self.engine) as conn:
            locked = self.lock(conn, consult_id)
            if locked is None:
                return None
            pk, consult = locked
            if consult.overdue_at is not None or not consult.is_overdue(now):
                return None
            self.update(conn, pk, consult.updated_at, overdue_at=now)
            self.add_history(
                conn,
                pk,
                HistoryEntry(
                    time=now,
                    actor=actor,
                    action=ConsultAction.OVERDUE,
                    from_status=consult.status,
                    to_status=consult.status,
                    assignee=consult.assignee,
                    reason=f"no signed report by {consult.due_at.isoformat()}",
                ),
            )
            return _consult(conn.execute(select(_consults).where(_consults.c.pk == pk)).one())

    # -- reading ---------------------------------------------------------------

    def get(self, consult_id: str) -> Consult | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(_consults).where(_consults.c.consult_id == consult_id)).first()
        return None if row is None else _consult(row)

    def history(self, consult_id: str) -> list[HistoryEntry]:
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(_history)
                .join(_consults, _history.c.consult_pk == _consults.c.pk)
                .where(_consults.c.consult_id == consult_id)
                .order_by(_history.c.pk)
            ).all()
        return [
            HistoryEntry(
                time=utc(row.time),
                actor=row.actor,
                action=ConsultAction(row.action),
                from_status=ConsultStatus(row.from_status) if row.from_status else None,
                to_status=ConsultStatus(row.to_status),
                target=Target(row.target_organisation, row.target_department, row.target_specialist)
                if row.target_organisation
                else None,
                assignee=row.assignee,
                reason=row.reason,
            )
            for row in rows
        ]

    def search(self, viewer: ConsultViewer, filters: ConsultFilters, now: datetime) -> list[Consult]:
        """Consults the viewer may see that match ``filters``, soonest deadline first."""
        c = _consults.c
        stmt = select(_consults).where(visible_condition(viewer))
        if filters.statuses:
            stmt = stmt.where(c.status.in_([status.value for status in filters.statuses]))
        if filters.urgency is not None:
            stmt = stmt.where(c.urgency == filters.urgency.value)
        if filters.study_instance_uid is not None:
            stmt = stmt.where(c.study_instance_uid == filters.study_instance_uid)
        if filters.assignee is not None:
            stmt = stmt.where(c.assignee == filters.assignee)
        if filters.overdue is not None:
            is_overdue = and_(c.status.in_(_open_values()), c.due_at <= now)
            stmt = stmt.where(is_overdue if filters.overdue else ~is_overdue)
        stmt = stmt.order_by(c.due_at, c.pk).limit(filters.limit).offset(filters.offset)
        with reading(self.engine) as conn:
            return [_consult(row) for row in conn.execute(stmt)]

    def grants_study(self, viewer: ConsultViewer, study_instance_uid: str) -> bool:
        """Whether a consult on this study that is not declined or cancelled is visible to the viewer."""
        stmt = (
            select(_consults.c.pk)
            .where(
                _consults.c.study_instance_uid == study_instance_uid,
                _consults.c.status.not_in([ConsultStatus.DECLINED.value, ConsultStatus.CANCELLED.value]),
                visible_condition(viewer),
            )
            .limit(1)
        )
        with reading(self.engine) as conn:
            return conn.execute(stmt).first() is not None

    def overdue_candidates(self, now: datetime, limit: int = 500) -> list[Consult]:
        """Open consults past their deadline that have not been escalated yet."""
        c = _consults.c
        stmt = (
            select(_consults)
            .where(c.status.in_(_open_values()), c.due_at <= now, c.overdue_at.is_(None))
            .order_by(c.due_at)
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return [_consult(row) for row in conn.execute(stmt)]

    def study(self, study_instance_uid: str) -> StudySummary | None:
        """The stored study, whoever asks (callers check scope)."""
        stmt = (
            select(
                _studies.c.study_instance_uid,
                _studies.c.source_organisation,
                _studies.c.study_date,
                _studies.c.study_description,
                _studies.c.accession_number,
                _studies.c.modalities_in_study,
                _patients.c.patient_id,
                _patients.c.issuer_of_patient_id,
                _patients.c.patient_name,
            )
            .join(_patients, _studies.c.patient_pk == _patients.c.pk)
            .where(_studies.c.study_instance_uid == study_instance_uid)
        )
        with reading(self.engine) as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return StudySummary(
            study_instance_uid=row.study_instance_uid,
            source_organisation=row.source_organisation,
            patient_id=row.patient_id,
            issuer_of_patient_id=row.issuer_of_patient_id,
            patient_name=row.patient_name,
            study_date=row.study_date,
            study_description=row.study_description,
            accession_number=row.accession_number,
            modalities=tuple(filter(None, row.modalities_in_study.split("\\"))),
        )


def _open_values() -> Sequence[str]:
    return [
        ConsultStatus.REQUESTED.value,
        ConsultStatus.ACCEPTED.value,
        ConsultStatus.IN_REVIEW.value,
        ConsultStatus.REPORTED.value,
    ]
