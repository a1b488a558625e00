"""Referrals and their history in the index database.

The service (``teleconsult/consults/referrals.py``) decides what may happen;
this module reads and writes rows. A referral row keeps its own fields and
current state; study, patient and urgency are joined from its consult on
every read, so they cannot drift apart. Changes run inside ``writing`` with
the referral row locked (``lock``): two people accepting the same referral
at once cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, case, or_, select, update

from teleconsult.domain.consults import ConsultViewer, Urgency, utc
from teleconsult.domain.referrals import (
    OPEN,
    Direction,
    Referral,
    ReferralAction,
    ReferralSide,
    ReferralStatus,
    ReferralStep,
    ReferralTarget,
)
from teleconsult.storage.consults import visible_condition
from teleconsult.storage.tables import ConsultRow, ReferralHistoryRow, ReferralRow
from teleconsult.storage.transactions import reading

__all__ = ["ReferralFilters", "ReferralStore", "referral_visible_condition"]

_referrals = ReferralRow.__table__
_history = ReferralHistoryRow.__table__
_consults = ConsultRow.__table__


@dataclass(frozen=True, slots=True)
class ReferralFilters:
    statuses: tuple[ReferralStatus, ...] = ()
    direction: Direction | None = None
    green_channel: bool | None = None
    side: ReferralSide | None = None
    consult_id: str | None = None
    limit: int = 100
    offset: int = 0


def _select() -> Select[Any]:
    c = _consults.c
    return select(
        _referrals,
        c.consult_id,
        c.study_instance_uid,
        c.patient_id,
        c.issuer_of_patient_id,
        c.source_organisation,
        c.urgency,
    ).join(_consults, _referrals.c.consult_pk == c.pk)


def _referral(row: Any) -> Referral:
    return Referral(
        referral_id=row.referral_id,
        consult_id=row.consult_id,
        study_instance_uid=row.study_instance_uid,
        patient_id=row.patient_id,
        issuer_of_patient_id=row.issuer_of_patient_id,
        patient_organisation=row.source_organisation,
        urgency=Urgency(row.urgency),
        direction=Direction(row.direction),
        green_channel=bool(row.green_channel),
        reason=row.reason,
        clinical_summary=row.clinical_summary,
        instructions=row.instructions,
        target=ReferralTarget(row.target_organisation, row.target_department, row.target_specialist),
        issued_by=row.issued_by,
        issuing_organisation=row.issuing_organisation,
        issued_at=utc(row.issued_at),
        status=ReferralStatus(row.status),
        status_note=row.status_note,
        updated_at=utc(row.updated_at),
    )


def referral_visible_condition(viewer: ConsultViewer) -> ColumnElement[bool]:
    """``domain.referrals.referral_visible_to`` as SQL (a test checks that both agree)."""
    scope = sorted(viewer.scope)
    return or_(
        visible_condition(viewer),
        _referrals.c.target_organisation.in_(scope),
        _referrals.c.issuing_organisation.in_(scope),
    )


class ReferralStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing (inside ``writing(engine)``) ---------------------------------

    def insert(self, conn: Connection, consult_pk: int, referral: Referral, step: ReferralStep) -> int:
        pk = conn.execute(
            _referrals.insert()
            .values(
                referral_id=referral.referral_id,
                consult_pk=consult_pk,
                direction=referral.direction.value,
                green_channel=referral.green_channel,
                reason=referral.reason,
                clinical_summary=referral.clinical_summary,
                instructions=referral.instructions,
                target_organisation=referral.target.organisation,
                target_department=referral.target.department,
                target_specialist=referral.target.specialist,
                issued_by=referral.issued_by,
                issuing_organisation=referral.issuing_organisation,
                issued_at=referral.issued_at,
                status=referral.status.value,
                status_note=referral.status_note,
                updated_at=referral.updated_at,
            )
            .returning(_referrals.c.pk)
        ).scalar_one()
        self.add_step(conn, pk, step)
        return int(pk)

    def lock(self, conn: Connection, referral_id: str) -> tuple[int, Referral] | None:
        """The referral's row, locked until the transaction ends (PostgreSQL; SQLite holds the write lock)."""
        row = conn.execute(
            _select().where(_referrals.c.referral_id == referral_id).with_for_update(of=_referrals)
        ).first()
        return None if row is None else (int(row.pk), _referral(row))

    def open_duplicate(
        self, conn: Connection, consult_pk: int, direction: Direction, target_organisation: str
    ) -> str | None:
        """The id of an open referral of this consult in this direction to this organisation, if any."""
        r = _referrals.c
        found = conn.execute(
            select(r.referral_id)
            .where(
                r.consult_pk == consult_pk,
                r.direction == direction.value,
                r.target_organisation == target_organisation,
                r.status.in_([status.value for status in OPEN]),
            )
            .limit(1)
        ).scalar()
        return None if found is None else str(found)

    def update_status(
        self, conn: Connection, pk: int, status: ReferralStatus, note: str | None, now: datetime
    ) -> Referral:
        conn.execute(
            update(_referrals)
            .where(_referrals.c.pk == pk)
            .values(status=status.value, status_note=note, updated_at=now)
        )
        return _referral(conn.execute(_select().where(_referrals.c.pk == pk)).one())

    def add_step(self, conn: Connection, pk: int, step: ReferralStep) -> None:
        conn.execute(
            _history.insert().values(
                referral_pk=pk,
                time=step.time,
                actor=step.actor[:64],
                actor_organisation=step.actor_organisation[:64],
                action=step.action.value,
                from_status=step.from_status.value if step.from_status else None,
                to_status=step.to_status.value,
                note=step.note[:1024] if step.note else None,
            )
        )

    # -- reading ---------------------------------------------------------------

    def get(self, referral_id: str) -> Referral | None:
        with reading(self.engine) as conn:
            row = conn.execute(_select().where(_referrals.c.referral_id == referral_id)).first()
        return None if row is None else _referral(row)

    def history(self, referral_ids: Iterable[str]) -> dict[str, list[ReferralStep]]:
        """The steps of each referral named, oldest first, in one query."""
        ids = sorted(set(referral_ids))
        steps: dict[str, list[ReferralStep]] = {referral_id: [] for referral_id in ids}
        if not ids:
            return steps
        h = _history.c
        stmt = (
            select(_history, _referrals.c.referral_id)
            .join(_referrals, h.referral_pk == _referrals.c.pk)
            .where(_referrals.c.referral_id.in_(ids))
            .order_by(h.pk)
        )
        with reading(self.engine) as conn:
            for row in conn.execute(stmt):
                steps[row.referral_id].append(
                    ReferralStep(
                        time=utc(row.time),
                        actor=row.actor,
                        actor_organisation=row.actor_organisation,
                        action=ReferralAction(row.action),
                        from_status=ReferralStatus(row.from_status) if row.from_status else None,
                        to_status=ReferralStatus(row.to_status),
                        note=row.note,
                    )
                )
        return steps

    def search(self, viewer: ConsultViewer, filters: ReferralFilters) -> list[Referral]:
        """Referrals the viewer may see that match ``filters``.

        Green-channel referrals first; then open ones (issued, accepted)
        before closed ones; open ones oldest first, as a queue is worked,
        closed ones newest first.
        """
        r = _referrals.c
        open_values = [status.value for status in sorted(OPEN)]
        stmt = _select().where(referral_visible_condition(viewer))
        if filters.statuses:
            stmt = stmt.where(r.status.in_([status.value for status in filters.statuses]))
        if filters.direction is not None:
            stmt = stmt.where(r.direction == filters.direction.value)
        if filters.green_channel is not None:
            stmt = stmt.where(r.green_channel.is_(filters.green_channel))
        if filters.side is ReferralSide.INCOMING:
            stmt = stmt.where(r.target_organisation == viewer.organisation)
        elif filters.side is ReferralSide.OUTGOING:
            stmt = stmt.where(r.issuing_organisation == viewer.organisation)
        if filters.consult_id is not None:
            stmt = stmt.where(_consults.c.consult_id == filters.consult_id)
        is_open = r.status.in_(open_values)
        stmt = (
            stmt.order_by(
                r.green_channel.desc(),
                case((is_open, 0), else_=1),
                case((is_open, r.issued_at), else_=None).asc(),
                r.issued_at.desc(),
                r.pk.desc(),
            )
            .limit(filters.limit)
            .offset(filters.offset)
        )
        with reading(self.engine) as conn:
            return [_referral(row) for row in conn.execute(stmt)]
