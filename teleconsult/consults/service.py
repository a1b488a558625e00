"""Consult use cases: request, accept, decline, cancel, reassign, review, deliver, escalate.

Each change runs in one transaction with the consult row locked, checks in
a fixed order and refuses without changing anything:

1. unknown, or not visible to the caller: ``NotFoundError`` / ``HiddenError`` (404, same answer);
2. visible, but not the caller's to do: ``PermissionDeniedError`` (403);
3. not allowed in the consult's state: ``ConsultStateError`` (409).

Events are published after the commit, so a subscriber never sees a change
that was rolled back. The clock is a constructor argument (``clock``) so
deadlines and escalation can be tested without waiting.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from teleconsult.config import Settings
from teleconsult.consults.access import HiddenError, viewer_of
from teleconsult.consults.targets import Escalation, TargetResolver
from teleconsult.domain.consults import (
    OPEN,
    Consult,
    ConsultAction,
    ConsultStatus,
    ConsultViewer,
    HistoryEntry,
    SlaPolicy,
    Target,
    Urgency,
    check_reason,
    is_requesting_side,
    manages_target,
    may_accept,
    next_status,
    visible_to,
)
from teleconsult.domain.identity import Principal, Role
from teleconsult.domain.reports import format_time, signing_time
from teleconsult.domain.uids import check_uid
from teleconsult.errors import (
    ConsultStateError,
    InvalidConsultError,
    NotFoundError,
    PermissionDeniedError,
)
from teleconsult.events import Event, EventBus, EventType
from teleconsult.storage.consults import ConsultFilters, ConsultStore, StudySummary
from teleconsult.storage.departments import DepartmentStore
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.reports import ReportStore
from teleconsult.storage.transactions import writing

__all__ = ["SYSTEM_ACTOR", "ConsultService", "Locked"]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
MAX_QUESTION = 4000
_CLINICAL = (Role.SONOGRAPHER, Role.TOWNSHIP_DOCTOR, Role.SPECIALIST)

_EVENTS = {
    ConsultAction.REQUEST: EventType.CONSULT_REQUESTED,
    ConsultAction.ACCEPT: EventType.CONSULT_ACCEPTED,
    ConsultAction.DECLINE: EventType.CONSULT_DECLINED,
    ConsultAction.CANCEL: EventType.CONSULT_CANCELLED,
    ConsultAction.REASSIGN: EventType.CONSULT_REASSIGNED,
    ConsultAction.SUBMIT: EventType.CONSULT_REPORTED,
    ConsultAction.DELIVER: EventType.CONSULT_DELIVERED,
}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Locked:
    """A consult read for change inside a transaction: its row key, state and the caller's view."""

    pk: int
    consult: Consult
    viewer: ConsultViewer | None  # None for the system (overdue check, outputs)


def consult_event(event_type: str, consult: Consult, actor: str, **extra: Any) -> Event:
    """An event about a consult, with what notifications need to route it."""
    return Event(
        type=event_type,
        data={
            "consult_id": consult.consult_id,
            "study_instance_uid": consult.study_instance_uid,
            "status": consult.status.value,
            "urgency": consult.urgency.value,
            "source_organisation": consult.source_organisation,
            "target": {
                "kind": consult.target.kind.value,
                "organisation": consult.target.organisation,
                "department": consult.target.department,
                "specialist": consult.target.specialist,
            },
            "assignee": consult.assignee,
            "due_at": format_time(consult.due_at),
            "actor": actor,
            **extra,
        },
    )


class ConsultService:
    def __init__(
        self,
        engine: Engine,
        bus: EventBus,
        settings: Settings,
        identity: IdentityStore,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.settings = settings
        self.identity = identity
        self.clock = clock or _now
        self.store = ConsultStore(engine)
        self.reports = ReportStore(engine)
        self.departments = DepartmentStore(engine)
        self.targets = TargetResolver(identity, self.departments)
        self.sla = SlaPolicy(
            critical=settings.consult_sla_minutes_critical,
            stat=settings.consult_sla_minutes_stat,
            urgent=settings.consult_sla_minutes_urgent,
            routine=settings.consult_sla_minutes_routine,
        )

    def now(self) -> datetime:
        return signing_time(self.clock())

    def viewer(self, principal: Principal) -> ConsultViewer:
        return viewer_of(principal, self.departments)

    # -- reading -----------------------------------------------------------------

    def get(self, principal: Principal, consult_id: str) -> Consult:
        """The consult if the caller may see it; 404 (the same for unknown and hidden) otherwise."""
        consult = self.store.get(consult_id) if _is_uuid(consult_id) else None
        return self.check_visible(consult_id, consult, self.viewer(principal))

    def check_visible(self, consult_id: str, consult: Consult | None, viewer: ConsultViewer) -> Consult:
        message = f"consult {consult_id[:40]} does not exist or is not visible to {viewer.username}"
        if consult is None:
            raise NotFoundError(message)
        if not visible_to(consult, viewer):
            raise HiddenError(
                message,
                study_instance_uid=consult.study_instance_uid,
                patient_id=consult.patient_id,
                detail=(
                    f"consult {consult.consult_id} of {consult.source_organisation} "
                    "is outside the caller's view"
                ),
            )
        return consult

    def search(self, principal: Principal, filters: ConsultFilters) -> list[Consult]:
        return self.store.search(self.viewer(principal), filters, self.now())

    def history(self, consult_id: str) -> list[HistoryEntry]:
        return self.store.history(consult_id)

    def study(self, consult: Consult) -> StudySummary | None:
        return None if consult.study_instance_uid is None else self.store.study(consult.study_instance_uid)

    def escalation(self, consult: Consult) -> Escalation:
        return self.targets.escalation(consult)

    # -- requesting ----------------------------------------------------------------

    def request(
        self,
        principal: Principal,
        *,
        urgency: Urgency | str,
        question: str,
        study_instance_uid: str | None = None,
        patient_id: str | None = None,
        issuer_of_patient_id: str | None = None,
        target_organisation: str | None = None,
        target_department: str | None = None,
        target_specialist: str | None = None,
    ) -> Consult:
        """A new consult on a stored study, or on a patient whose study has not arrived yet."""
        if principal.role not in _CLINICAL:
            raise PermissionDeniedError(
                f"consults are requested by sonographers, doctors and specialists; {principal.username} "
                f"is {principal.role.value}"
            )
        text = question.strip()
        if not text or len(text) > MAX_QUESTION:
            raise InvalidConsultError(f"the clinical question must be 1-{MAX_QUESTION} characters")
        if (study_instance_uid is None) == (patient_id is None):
            raise InvalidConsultError(
                "name either study_instance_uid or patient_id (before the study arrives)"
            )
        if study_instance_uid is not None:
            study = self._visible_study(principal, study_instance_uid)
            source, pid, issuer = study.source_organisation, study.patient_id, study.issuer_of_patient_id
        else:
            pid = (patient_id or "").strip()
            issuer = (issuer_of_patient_id or "").strip() or principal.organisation
            if not pid or len(pid) > 64 or len(issuer) > 64:
                raise InvalidConsultError("patient_id and issuer_of_patient_id must be 1-64 characters")
            source = principal.organisation
        target = self.targets.resolve(
            principal.organisation,
            organisation=target_organisation,
            department=target_department,
            specialist=target_specialist,
        )
        now = self.now()
        urgency = Urgency(urgency)
        consult = Consult(
            consult_id=str(uuid.uuid4()),
            study_instance_uid=study_instance_uid,
            patient_id=pid,
            issuer_of_patient_id=issuer,
            source_organisation=source,
            requested_by=principal.username,
            requested_at=now,
            urgency=urgency,
            question=text,
            target=target,
            assignee=None,
            status=ConsultStatus.REQUESTED,
            status_reason=None,
            due_at=self.sla.deadline(urgency, now),
            overdue_at=None,
            updated_at=now,
        )
        entry = HistoryEntry(
            time=now,
            actor=principal.username,
            action=ConsultAction.REQUEST,
            from_status=None,
            to_status=ConsultStatus.REQUESTED,
            target=target,
        )
        with writing(self.engine) as conn:
            self.store.insert(conn, consult, entry)
        logger.info(
            "consult %s requested by %s (%s, due %s) for %s",
            consult.consult_id,
            principal.username,
            urgency.value,
            consult.due_at.isoformat(),
            target.describe(),
        )
        self.bus.publish(consult_event(EventType.CONSULT_REQUESTED, consult, principal.username))
        return consult

    def _visible_study(self, principal: Principal, study_instance_uid: str) -> StudySummary:
        uid = check_uid(study_instance_uid, "Study Instance UID")
        study = self.store.study(uid)
        message = f"study {uid} is not stored, or not visible to {principal.username}"
        if study is None:
            raise NotFoundError(message)
        if not principal.can_see(study.source_organisation):
            raise HiddenError(
                message,
                study_instance_uid=uid,
                patient_id=study.patient_id,
                detail=f"study of organisation {study.source_organisation} is outside the caller's scope",
            )
        return study

    # -- changing state --------------------------------------------------------------

    def accept(self, principal: Principal, consult_id: str) -> Consult:
        def allowed(locked: Locked) -> None:
            assert locked.viewer is not None
            if not may_accept(locked.consult, locked.viewer):
                raise PermissionDeniedError(
                    f"consult {consult_id} is addressed to {locked.consult.target.describe()}; "
                    f"{principal.username} is not among them"
                )

        return self._transition(
            principal, consult_id, ConsultAction.ACCEPT, allowed, assignee=principal.username
        )

    def decline(self, principal: Principal, consult_id: str, reason: str) -> Consult:
        text = check_reason(reason, "decline")

        def allowed(locked: Locked) -> None:
            consult, viewer = locked.consult, locked.viewer
            assert viewer is not None
            if not (
                viewer.username == consult.assignee
                or may_accept(consult, viewer)
                or manages_target(consult, viewer)
            ):
                raise PermissionDeniedError(
                    f"only those consult {consult_id} is addressed to ({consult.target.describe()}) "
                    "or who manage them may decline it"
                )

        return self._transition(
            principal, consult_id, ConsultAction.DECLINE, allowed, reason=text, status_reason=text
        )

    def cancel(self, principal: Principal, consult_id: str, reason: str) -> Consult:
        text = check_reason(reason, "cancel")

        def allowed(locked: Locked) -> None:
            assert locked.viewer is not None
            if not is_requesting_side(locked.consult, locked.viewer):
                raise PermissionDeniedError(
                    f"only the requesting organisation ({locked.consult.source_organisation}) may cancel "
                    f"consult {consult_id}; the specialist side declines instead"
                )

        return self._transition(
            principal, consult_id, ConsultAction.CANCEL, allowed, reason=text, status_reason=text
        )

    def reassign(
        self,
        principal: Principal,
        consult_id: str,
        reason: str,
        *,
        organisation: str | None = None,
        department: str | None = None,
        specialist: str | None = None,
    ) -> Consult:
        """Address the consult to someone else; it waits to be accepted again, its deadline unchanged."""
        text = check_reason(reason, "reassign")
        if not (organisation or department or specialist):
            raise InvalidConsultError(
                "name the new target: target_organisation, target_department or target_specialist"
            )
        target = self.targets.resolve(
            principal.organisation, organisation=organisation, department=department, specialist=specialist
        )

        def allowed(locked: Locked) -> None:
            consult, viewer = locked.consult, locked.viewer
            assert viewer is not None
            if not (
                viewer.username in (consult.assignee, consult.target.specialist)
                or manages_target(consult, viewer)
                or (is_requesting_side(consult, viewer) and consult.status is ConsultStatus.REQUESTED)
            ):
                raise PermissionDeniedError(
                    f"consult {consult_id} can be reassigned by its specialist, an admin or department "
                    "lead of its target, or the requesting side before it is accepted"
                )
            if target == consult.target and consult.assignee is None:
                raise InvalidConsultError(f"consult {consult_id} is addressed to {target.describe()} already")

        return self._transition(
            principal,
            consult_id,
            ConsultAction.REASSIGN,
            allowed,
            reason=text,
            target=target,
            assignee=None,
            status_reason=None,
        )

    def start_review(self, principal: Principal, consult_id: str) -> Consult:
        return self._transition(principal, consult_id, ConsultAction.START_REVIEW, _assignee_only("review"))

    def acknowledge(self, principal: Principal, consult_id: str) -> Consult:
        """The requesting side confirms it received the signed report: ``delivered``."""

        def allowed(locked: Locked) -> None:
            assert locked.viewer is not None
            if not is_requesting_side(locked.consult, locked.viewer):
                raise PermissionDeniedError(
                    f"only the requesting organisation ({locked.consult.source_organisation}) confirms "
                    f"receipt of the report of consult {consult_id}"
                )

        return self._transition(principal, consult_id, ConsultAction.DELIVER, allowed)

    def mark_delivered(self, consult_id: str, detail: str, actor: str = SYSTEM_ACTOR) -> Consult:
        """Hook for the output stage: the signed report reached the requesting organisation."""
        return self._transition(None, consult_id, ConsultAction.DELIVER, None, reason=detail, actor=actor)

    def attach_study(self, principal: Principal, consult_id: str, study_instance_uid: str) -> Consult:
        """Link a patient consult to its study once the study has arrived."""
        study = self._visible_study(principal, study_instance_uid)
        now = self.now()
        with writing(self.engine) as conn:
            locked = self.lock(conn, consult_id, principal)
            consult, viewer = locked.consult, locked.viewer
            assert viewer is not None
            if not is_requesting_side(consult, viewer):
                raise PermissionDeniedError(
                    f"only the requesting organisation ({consult.source_organisation}) links consult "
                    f"{consult_id} to a study"
                )
            if consult.study_instance_uid is not None:
                raise ConsultStateError(
                    f"consult {consult_id} is on study {consult.study_instance_uid} already"
                )
            if consult.status not in OPEN:
                raise ConsultStateError(
                    f"consult {consult_id} is {consult.status.value}; it takes no study now"
                )
            report = self.reports.load(conn, locked.pk, consult_id)
            if report is not None and report.signatures:
                raise ConsultStateError(
                    f"the report of consult {consult_id} has been signed for the patient alone; "
                    "request a new consult on the study"
                )
            if (study.patient_id, study.issuer_of_patient_id) != (
                consult.patient_id,
                consult.issuer_of_patient_id,
            ):
                raise InvalidConsultError(
                    f"study {study.study_instance_uid} is of another patient than consult {consult_id}"
                )
            self.store.update(conn, locked.pk, now, study_instance_uid=study.study_instance_uid)
            self.store.add_history(
                conn,
                locked.pk,
                HistoryEntry(
                    time=now,
                    actor=principal.username,
                    action=ConsultAction.ATTACH_STUDY,
                    from_status=consult.status,
                    to_status=consult.status,
                    reason=f"study {study.study_instance_uid}",
                ),
            )
        return self.get(principal, consult_id)

    def check_overdue(self) -> list[Consult]:
        """Flag every open consult past its deadline (once) and escalate it: ``consult.overdue``.

        Safe with several API replicas: a consult is flagged in a locked
        transaction, so only one replica publishes its event.
        """
        now = self.now()
        flagged = []
        for candidate in self.store.overdue_candidates(now):
            consult = self.store.mark_overdue(candidate.consult_id, now, SYSTEM_ACTOR)
            if consult is None:
                continue
            escalation = self.escalation(consult)
            logger.warning(
                "consult %s (%s) is overdue since %s; escalated to %s",
                consult.consult_id,
                consult.urgency.value,
                consult.due_at.isoformat(),
                ", ".join(escalation.recipients) or "nobody (no lead or admin found)",
            )
            self.bus.publish(
                consult_event(
                    EventType.CONSULT_OVERDUE,
                    consult,
                    SYSTEM_ACTOR,
                    recipients=list(escalation.recipients),
                    escalation=escalation.via,
                    overdue_at=format_time(now),
                )
            )
            flagged.append(consult)
        return flagged

    # -- shared by the report service ------------------------------------------------

    def lock(self, conn: Connection, consult_id: str, principal: Principal | None) -> Locked:
        """The consult locked for change; 404 if unknown or not visible to ``principal``."""
        locked = self.store.lock(conn, consult_id) if _is_uuid(consult_id) else None
        if principal is None:
            if locked is None:
                raise NotFoundError(f"consult {consult_id[:40]} does not exist")
            return Locked(locked[0], locked[1], None)
        viewer = self.viewer(principal)
        consult = self.check_visible(consult_id, locked[1] if locked else None, viewer)
        assert locked is not None
        return Locked(locked[0], consult, viewer)

    def _transition(
        self,
        principal: Principal | None,
        consult_id: str,
        action: ConsultAction,
        allowed: Callable[[Locked], None] | None,
        *,
        reason: str | None = None,
        actor: str | None = None,
        target: Target | None = None,
        **values: Any,
    ) -> Consult:
        actor = actor or (principal.username if principal else SYSTEM_ACTOR)
        now = self.now()
        with writing(self.engine) as conn:
            locked = self.lock(conn, consult_id, principal)
            if allowed is not None:
                allowed(locked)
            status = next_status(consult_id, locked.consult.status, action)
            self.store.update(conn, locked.pk, now, status=status, target=target, **values)
            consult = self.store.lock(conn, consult_id)
            assert consult is not None
            changed = consult[1]
            self.store.add_history(
                conn,
                locked.pk,
                HistoryEntry(
                    time=now,
                    actor=actor,
                    action=action,
                    from_status=locked.consult.status,
                    to_status=status,
                    target=target,
                    assignee=changed.assignee,
                    reason=reason,
                ),
            )
        logger.info(
            "consult %s %s by %s: %s -> %s", consult_id, action.value, actor, locked.consult.status, status
        )
        event_type = _EVENTS.get(action)
        if event_type is not None:
            extra = {"reason": reason} if reason else {}
            self.bus.publish(consult_event(event_type, changed, actor, **extra))
        return changed


def _assignee_only(what: str) -> Callable[[Locked], None]:
    def allowed(locked: Locked) -> None:
        assert locked.viewer is not None
        if locked.viewer.username != locked.consult.assignee:
            who = locked.consult.assignee or "nobody yet"
            raise PermissionDeniedError(
                f"only the specialist who accepted consult {locked.consult.consult_id} ({who}) may {what} it"
            )

    return allowed


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
