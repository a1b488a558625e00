"""Consults: what a township asks a county specialist, its states, deadline and who sees it.

Pure model, no I/O. The state machine is one table (``_TRANSITIONS``) so the
API, the overdue check and the tests all refuse the same moves with the same
sentence. Visibility is one function (``visible_to``); ``storage/consults.py``
writes the same rule as SQL for lists, and a test keeps the two in step.

::

    requested ──accept──▶ accepted ──review──▶ in_review ──submit──▶ reported ──sign──▶ signed ──▶ delivered
        │  ▲                 │  └─────────────────┴──sign (records the review steps)───▲
        │  └──reassign───────┴────────────────────┴────────── (back to requested, new target)
        ├──decline──▶ declined      (from requested, accepted, in_review)
        └──cancel───▶ cancelled     (from any state before signed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from teleconsult.domain.identity import Role
from teleconsult.errors import ConsultStateError, InvalidConsultError

__all__ = [
    "CLOSED",
    "FINAL",
    "OPEN",
    "Consult",
    "ConsultAction",
    "ConsultStatus",
    "ConsultViewer",
    "HistoryEntry",
    "SlaPolicy",
    "Target",
    "TargetKind",
    "Urgency",
    "check_reason",
    "grants_study",
    "is_requesting_side",
    "manages_target",
    "may_accept",
    "next_status",
    "utc",
    "visible_to",
]


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"
    CRITICAL = "critical"


class ConsultStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    IN_REVIEW = "in_review"
    REPORTED = "reported"
    SIGNED = "signed"
    DELIVERED = "delivered"
    DECLINED = "declined"
    CANCELLED = "cancelled"


OPEN = frozenset(
    {ConsultStatus.REQUESTED, ConsultStatus.ACCEPTED, ConsultStatus.IN_REVIEW, ConsultStatus.REPORTED}
)
FINAL = frozenset({ConsultStatus.SIGNED, ConsultStatus.DELIVERED})
CLOSED = frozenset({ConsultStatus.DECLINED, ConsultStatus.CANCELLED})


class TargetKind(StrEnum):
    SPECIALIST = "specialist"  # one named specialist
    DEPARTMENT = "department"  # any specialist member of a department of the target organisation
    POOL = "pool"  # any specialist of the target organisation


class ConsultAction(StrEnum):
    """What happened to a consult: history rows and state changes are named by these."""

    REQUEST = "requested"
    ACCEPT = "accepted"
    DECLINE = "declined"
    CANCEL = "cancelled"
    REASSIGN = "reassigned"
    START_REVIEW = "review_started"
    SUBMIT = "reported"
    SIGN = "signed"
    DELIVER = "delivered"
    OVERDUE = "overdue"
    ATTACH_STUDY = "study_attached"


# action -> (states it may start from, state it leads to)
_TRANSITIONS: dict[ConsultAction, tuple[frozenset[ConsultStatus], ConsultStatus]] = {
    ConsultAction.ACCEPT: (frozenset({ConsultStatus.REQUESTED}), ConsultStatus.ACCEPTED),
    ConsultAction.DECLINE: (
        frozenset({ConsultStatus.REQUESTED, ConsultStatus.ACCEPTED, ConsultStatus.IN_REVIEW}),
        ConsultStatus.DECLINED,
    ),
    ConsultAction.CANCEL: (OPEN, ConsultStatus.CANCELLED),
    ConsultAction.REASSIGN: (OPEN, ConsultStatus.REQUESTED),
    ConsultAction.START_REVIEW: (frozenset({ConsultStatus.ACCEPTED}), ConsultStatus.IN_REVIEW),
    ConsultAction.SUBMIT: (frozenset({ConsultStatus.IN_REVIEW}), ConsultStatus.REPORTED),
    # signing an unchanged preliminary report from accepted records the review steps it implies
    ConsultAction.SIGN: (
        frozenset({ConsultStatus.ACCEPTED, ConsultStatus.IN_REVIEW, ConsultStatus.REPORTED}),
        ConsultStatus.SIGNED,
    ),
    ConsultAction.DELIVER: (frozenset({ConsultStatus.SIGNED}), ConsultStatus.DELIVERED),
}

_VERBS = {
    ConsultAction.ACCEPT: "accepted",
    ConsultAction.DECLINE: "declined",
    ConsultAction.CANCEL: "cancelled",
    ConsultAction.REASSIGN: "reassigned",
    ConsultAction.START_REVIEW: "taken into review",
    ConsultAction.SUBMIT: "submitted as reported",
    ConsultAction.SIGN: "signed",
    ConsultAction.DELIVER: "marked delivered",
}


def next_status(consult_id: str, current: ConsultStatus | str, action: ConsultAction | str) -> ConsultStatus:
    """The state ``action`` leads to, or ``ConsultStateError`` (409) saying which states allow it."""
    current, action = ConsultStatus(current), ConsultAction(action)
    allowed, target = _TRANSITIONS[action]
    if current not in allowed:
        states = ", ".join(sorted(status.value for status in allowed))
        raise ConsultStateError(
            f"consult {consult_id} is {current.value}; it can be {_VERBS[action]} only when {states}"
        )
    return target


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one (SQLite gives those back) is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Minutes from request to a signed report, per urgency (``TELECONSULT_CONSULT_SLA_MINUTES_*``)."""

    critical: int = 30
    stat: int = 60
    urgent: int = 4 * 60
    routine: int = 48 * 60

    def minutes(self, urgency: Urgency | str) -> int:
        minutes: int = getattr(self, Urgency(urgency).value)
        return minutes

    def deadline(self, urgency: Urgency | str, requested_at: datetime) -> datetime:
        return utc(requested_at) + timedelta(minutes=self.minutes(urgency))


@dataclass(frozen=True, slots=True)
class Target:
    """Who a consult is addressed to. ``kind`` follows from what is named."""

    organisation: str
    department: str | None = None
    specialist: str | None = None

    @property
    def kind(self) -> TargetKind:
        if self.specialist:
            return TargetKind.SPECIALIST
        if self.department:
            return TargetKind.DEPARTMENT
        return TargetKind.POOL

    def describe(self) -> str:
        if self.specialist:
            return f"specialist {self.specialist} of {self.organisation}"
        if self.department:
            return f"department {self.department} of {self.organisation}"
        return f"the specialists of {self.organisation}"


@dataclass(frozen=True, slots=True)
class Consult:
    consult_id: str
    study_instance_uid: str | None
    patient_id: str
    issuer_of_patient_id: str
    source_organisation: str
    requested_by: str
    requested_at: datetime
    urgency: Urgency
    question: str
    target: Target
    assignee: str | None
    status: ConsultStatus
    status_reason: str | None
    due_at: datetime
    overdue_at: datetime | None
    updated_at: datetime

    def is_overdue(self, now: datetime) -> bool:
        """Past its deadline without a signed report (closed consults are never overdue)."""
        return self.status in OPEN and utc(now) >= utc(self.due_at)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    time: datetime
    actor: str
    action: ConsultAction
    from_status: ConsultStatus | None
    to_status: ConsultStatus
    target: Target | None = None
    assignee: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ConsultViewer:
    """A signed-in user as consult rules see them: scope plus department memberships."""

    username: str
    role: Role
    organisation: str
    scope: frozenset[str]
    departments: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (organisation, code)
    leads: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # departments they lead


def is_requesting_side(consult: Consult, viewer: ConsultViewer) -> bool:
    """Who acts for the requesting organisation: cancels, confirms receipt, links the study.

    The consult's data must be in the viewer's scope; county specialists see
    every township's data through the tree, but they are the consulted side,
    so a specialist acts for the requesting side only on a consult they
    requested themselves.
    """
    if consult.source_organisation not in viewer.scope:
        return False
    return viewer.role is not Role.SPECIALIST or viewer.username == consult.requested_by


def may_accept(consult: Consult, viewer: ConsultViewer) -> bool:
    """Whether the viewer is among those the consult is addressed to (before anyone accepted)."""
    if viewer.role is not Role.SPECIALIST:
        return False
    target = consult.target
    if target.kind is TargetKind.SPECIALIST:
        return viewer.username == target.specialist
    if target.kind is TargetKind.DEPARTMENT:
        return (target.organisation, target.department or "") in viewer.departments
    return viewer.organisation == target.organisation


def manages_target(consult: Consult, viewer: ConsultViewer) -> bool:
    """An admin of the target organisation (or above it), or a lead of the target department."""
    target = consult.target
    if viewer.role is Role.ADMIN and target.organisation in viewer.scope:
        return True
    return target.department is not None and (target.organisation, target.department) in viewer.leads


def visible_to(consult: Consult, viewer: ConsultViewer) -> bool:
    """Who sees a consult: the requesting side's scope, its assignee and addressees, their managers.

    Pool and department members see a consult only while it waits for
    someone to accept it; once accepted, it is the assignee's.
    """
    if consult.source_organisation in viewer.scope:
        return True
    if viewer.username in (consult.assignee, consult.target.specialist):
        return True
    if consult.status is ConsultStatus.REQUESTED and may_accept(consult, viewer):
        return True
    return manages_target(consult, viewer)


def grants_study(consult: Consult, viewer: ConsultViewer) -> bool:
    """Whether this consult lets the viewer read its study (shared through the consult).

    A declined or cancelled consult shares nothing any more.
    """
    return (
        consult.study_instance_uid is not None
        and consult.status not in CLOSED
        and visible_to(consult, viewer)
    )


def check_reason(reason: str | None, what: str) -> str:
    """Declining, cancelling and reassigning need a reason people can read later."""
    text = (reason or "").strip()
    if not text:
        raise InvalidConsultError(f"a reason is required to {what} a consult")
    return text
