"""Referrals: sending a consult's patient up to a higher level, or back down for follow-up.

Pure model, no I/O. A referral belongs to a consult. ``up`` (上转) sends the
patient to an organisation above the patient's own (the county hospital,
or a village's township); ``down`` (下转) sends them back to the
organisation that requested the consult, or one below it, for follow-up.
A ``green_channel`` (绿色通道) up referral asks the target to receive a
critical patient without the usual queue.

As for consults, the state machine is one table (``_TRANSITIONS``) and
visibility one function (``referral_visible_to``, written again as SQL in
``storage/referrals.py``), so every caller refuses the same moves with the
same words::

    issued ──accept──▶ accepted ──complete──▶ completed
      │                   │
      ├──decline──▶ declined          (the target side, from issued)
      └──cancel───▶ cancelled ◀───────┘  (the issuing side, from issued or accepted)

The errors live here rather than in ``teleconsult.errors`` because only
referral code raises them; they still derive from its tree, so the problem
handlers answer them like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from teleconsult.domain.consults import Consult, ConsultStatus, ConsultViewer, Urgency, visible_to
from teleconsult.domain.identity import Role, descendants
from teleconsult.errors import InvalidReferralError, ReferralStateError

__all__ = [
    "CLOSED",
    "GREEN_CHANNEL_URGENCIES",
    "MAX_NOTE",
    "MAX_REASON",
    "MAX_SUMMARY",
    "OPEN",
    "REFERABLE",
    "Direction",
    "InvalidReferralError",
    "Referral",
    "ReferralAction",
    "ReferralSide",
    "ReferralStateError",
    "ReferralStatus",
    "ReferralStep",
    "ReferralTarget",
    "ancestors",
    "check_target_organisation",
    "check_text",
    "default_green_channel",
    "is_issuing_side",
    "is_target_side",
    "next_status",
    "referral_visible_to",
]

MAX_REASON = 1024
MAX_NOTE = 1024
MAX_SUMMARY = 8000


class Direction(StrEnum):
    UP = "up"  # 上转: to an organisation above the patient's
    DOWN = "down"  # 下转: back to the requesting organisation or below, for follow-up


class ReferralStatus(StrEnum):
    ISSUED = "issued"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"


OPEN = frozenset({ReferralStatus.ISSUED, ReferralStatus.ACCEPTED})
CLOSED = frozenset({ReferralStatus.COMPLETED, ReferralStatus.DECLINED, ReferralStatus.CANCELLED})

# A referral follows a specialist's opinion: the consult must have been taken by one,
# and not been declined or cancelled.
REFERABLE = frozenset(
    {
        ConsultStatus.ACCEPTED,
        ConsultStatus.IN_REVIEW,
        ConsultStatus.REPORTED,
        ConsultStatus.SIGNED,
        ConsultStatus.DELIVERED,
    }
)

# Up referrals of consults this urgent are green-channel unless the issuer says otherwise.
GREEN_CHANNEL_URGENCIES = frozenset({Urgency.CRITICAL, Urgency.STAT})


class ReferralSide(StrEnum):
    """Work lists: referrals of the caller's own organisation (not those below it, which they also see)."""

    INCOMING = "incoming"  # addressed to the caller's organisation: patients coming to it
    OUTGOING = "outgoing"  # issued from the caller's organisation


class ReferralAction(StrEnum):
    """What happened to a referral: history rows and events are named by these."""

    ISSUE = "issued"
    ACCEPT = "accepted"
    DECLINE = "declined"
    CANCEL = "cancelled"
    COMPLETE = "completed"


# action -> (states it may start from, state it leads to)
_TRANSITIONS: dict[ReferralAction, tuple[frozenset[ReferralStatus], ReferralStatus]] = {
    ReferralAction.ACCEPT: (frozenset({ReferralStatus.ISSUED}), ReferralStatus.ACCEPTED),
    ReferralAction.DECLINE: (frozenset({ReferralStatus.ISSUED}), ReferralStatus.DECLINED),
    ReferralAction.CANCEL: (OPEN, ReferralStatus.CANCELLED),
    ReferralAction.COMPLETE: (frozenset({ReferralStatus.ACCEPTED}), ReferralStatus.COMPLETED),
}

_VERBS = {
    ReferralAction.ACCEPT: "accepted",
    ReferralAction.DECLINE: "declined",
    ReferralAction.CANCEL: "cancelled",
    ReferralAction.COMPLETE: "completed",
}


def next_status(
    referral_id: str, current: ReferralStatus | str, action: ReferralAction | str
) -> ReferralStatus:
    """The state ``action`` leads to, or ``ReferralStateError`` (409) saying which states allow it."""
    current, action = ReferralStatus(current), ReferralAction(action)
    if action is ReferralAction.ISSUE:
        raise ValueError("a referral is issued once, by creating it")
    allowed, target = _TRANSITIONS[action]
    if current not in allowed:
        states = " or ".join(sorted(status.value for status in allowed))
        raise ReferralStateError(
            f"referral {referral_id} is {current.value}; it can be {_VERBS[action]} only when {states}"
        )
    return target


@dataclass(frozen=True, slots=True)
class ReferralTarget:
    """Where the patient is sent; department and person are optional precision within it."""

    organisation: str
    department: str | None = None
    specialist: str | None = None

    def describe(self) -> str:
        parts = [self.organisation]
        if self.department:
            parts.append(f"department {self.department}")
        if self.specialist:
            parts.append(f"for {self.specialist}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Referral:
    """A referral with what it takes from its consult (study, patient, urgency) when read."""

    referral_id: str
    consult_id: str
    study_instance_uid: str | None
    patient_id: str
    issuer_of_patient_id: str
    patient_organisation: str  # the consult's source organisation
    urgency: Urgency  # the consult's
    direction: Direction
    green_channel: bool
    reason: str
    clinical_summary: str | None
    instructions: str | None
    target: ReferralTarget
    issued_by: str
    issuing_organisation: str
    issued_at: datetime
    status: ReferralStatus
    status_note: str | None  # of the latest step: acceptance note, decline or cancel reason, outcome
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReferralStep:
    """One transition, kept for ever: who, from which organisation, when, and their note."""

    time: datetime
    actor: str
    actor_organisation: str
    action: ReferralAction
    from_status: ReferralStatus | None
    to_status: ReferralStatus
    note: str | None = None


# -- the organisation tree ---------------------------------------------------------


def ancestors(code: str, tree: Mapping[str, str | None]) -> tuple[str, ...]:
    """The organisations above ``code``, nearest first (a cycle in bad data stops the walk)."""
    found: list[str] = []
    parent = tree.get(code)
    while parent is not None and parent not in found and parent != code:
        found.append(parent)
        parent = tree.get(parent)
    return tuple(found)


def check_target_organisation(
    direction: Direction,
    target: str,
    *,
    tree: Mapping[str, str | None],
    patient_organisation: str,
    requesting_organisation: str,
    issuing_organisation: str,
) -> str:
    """``target`` if a referral in ``direction`` may go there, else ``InvalidReferralError`` saying why.

    Up goes to an organisation above the patient's own. Down goes to the
    organisation that requested the consult or one below it, and never to
    the issuer's own organisation or one above it: that would not be down.
    """
    if target not in tree:
        raise InvalidReferralError(f"organisation {target} does not exist")
    if direction is Direction.UP:
        above = ancestors(patient_organisation, tree)
        if target not in above:
            where = ", ".join(above) if above else "none: it is at the top of its tree"
            raise InvalidReferralError(
                f"an up referral goes to an organisation above the patient's ({patient_organisation}: "
                f"{where}); {target} is not one of them"
            )
        return target
    if target not in descendants(requesting_organisation, tree):
        raise InvalidReferralError(
            f"a down referral goes back to the organisation that requested the consult "
            f"({requesting_organisation}) or one below it; {target} is neither"
        )
    if target == issuing_organisation or target in ancestors(issuing_organisation, tree):
        raise InvalidReferralError(
            f"a down referral leaves the issuer's level; {target} is {issuing_organisation} or above it"
        )
    return target


def default_green_channel(direction: Direction, urgency: Urgency) -> bool:
    """Critical and stat consults referred up take the green channel unless the issuer says not."""
    return direction is Direction.UP and urgency in GREEN_CHANNEL_URGENCIES


def check_text(value: str | None, what: str, maximum: int, *, required: bool) -> str | None:
    """Stripped text within ``maximum`` characters; ``required`` texts may not be blank."""
    text = (value or "").strip()
    if not text:
        if required:
            raise InvalidReferralError(f"{what} is required")
        return None
    if len(text) > maximum:
        raise InvalidReferralError(f"{what} may be at most {maximum} characters")
    return text


# -- who sees and acts ---------------------------------------------------------------


def referral_visible_to(referral: Referral, consult: Consult, viewer: ConsultViewer) -> bool:
    """Those who see the consult, the target side (and above it), the issuing side (and above it)."""
    return (
        visible_to(consult, viewer)
        or referral.target.organisation in viewer.scope
        or referral.issuing_organisation in viewer.scope
    )


def is_target_side(referral: Referral, viewer: ConsultViewer) -> bool:
    """Users of the target organisation, or of one above it."""
    return referral.target.organisation in viewer.scope


def is_issuing_side(referral: Referral, viewer: ConsultViewer) -> bool:
    """The issuer, or an admin of the issuing organisation (or above it), e.g. when the issuer is away."""
    if viewer.username == referral.issued_by:
        return True
    return viewer.role is Role.ADMIN and referral.issuing_organisation in viewer.scope
