"""Referral use cases: issue from a consult, accept, decline, complete, cancel, read and list.

Built on ``ConsultService``: the same clock, event bus, organisation tree
and visibility rules. Each change runs in one transaction with its row
locked (the consult's when issuing, the referral's when changing it) and
checks in a fixed order, refusing without changing anything:

1. unknown, or not visible to the caller: ``NotFoundError`` / ``HiddenError`` (404, same answer);
2. visible, but not the caller's to do: ``PermissionDeniedError`` (403);
3. not allowed in the consult's or referral's state: ``ConsultStateError`` / ``ReferralStateError`` (409);
4. a target, flag or text that cannot be used: ``InvalidReferralError`` (422);
5. when issuing, an open referral of the consult in the same direction to the same
   organisation: ``ReferralStateError`` (409), so a double submit makes one referral.

Events are published after the commit, so a subscriber never sees a
referral that was rolled back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from teleconsult.consults.access import HiddenError
from teleconsult.consults.service import ConsultService
from teleconsult.domain.consults import Consult, ConsultViewer
from teleconsult.domain.departments import check_department_code
from teleconsult.domain.identity import Principal, Role
from teleconsult.domain.referrals import (
    MAX_NOTE,
    MAX_REASON,
    MAX_SUMMARY,
    REFERABLE,
    Direction,
    InvalidReferralError,
    Referral,
    ReferralAction,
    ReferralStateError,
    ReferralStatus,
    ReferralStep,
    ReferralTarget,
    ancestors,
    check_target_organisation,
    check_text,
    default_green_channel,
    is_issuing_side,
    is_target_side,
    next_status,
    referral_visible_to,
)
from teleconsult.domain.reports import format_time
from teleconsult.errors import ConsultStateError, NotFoundError, PermissionDeniedError
from teleconsult.events import Event, EventType
from teleconsult.storage.referrals import ReferralFilters, ReferralStore
from teleconsult.storage.transactions import writing

__all__ = ["ReferralService", "referral_event"]

logger = logging.getLogger(__name__)

_ISSUERS = (Role.SPECIALIST, Role.ADMIN)

_EVENTS = {
    ReferralAction.ISSUE: EventType.REFERRAL_ISSUED,
    ReferralAction.ACCEPT: EventType.REFERRAL_ACCEPTED,
    ReferralAction.DECLINE: EventType.REFERRAL_DECLINED,
    ReferralAction.CANCEL: EventType.REFERRAL_CANCELLED,
    ReferralAction.COMPLETE: EventType.REFERRAL_COMPLETED,
}

Allowed = Callable[[Referral, ConsultViewer], None]


def referral_event(event_type: str, referral: Referral, actor: str, **extra: Any) -> Event:
    """An event about a referral, with what notifications need to route it."""
    return Event(
        type=event_type,
        data={
            "consult_id": referral.consult_id,
            "referral_id": referral.referral_id,
            "study_instance_uid": referral.study_instance_uid,
            "direction": referral.direction.value,
            "green_channel": referral.green_channel,
            "status": referral.status.value,
            "urgency": referral.urgency.value,
            "source_organisation": referral.patient_organisation,
            "issuing_organisation": referral.issuing_organisation,
            "target_organisation": referral.target.organisation,
            "target_department": referral.target.department,
            "target_specialist": referral.target.specialist,
            "issued_at": format_time(referral.issued_at),
            "actor": actor,
            **extra,
        },
    )


class ReferralService:
    def __init__(self, consults: ConsultService) -> None:
        self.consults = consults
        self.engine = consults.engine
        self.bus = consults.bus
        self.identity = consults.identity
        self.departments = consults.departments
        self.store = ReferralStore(consults.engine)

    def now(self) -> datetime:
        return self.consults.now()

    # -- reading -----------------------------------------------------------------

    def get(self, principal: Principal, referral_id: str) -> Referral:
        """The referral if the caller may see it; 404 (the same for unknown and hidden) otherwise."""
        referral = self.store.get(referral_id) if _is_uuid(referral_id) else None
        return self._check_visible(referral_id, referral, self.consults.viewer(principal))

    def for_consult(self, principal: Principal, consult_id: str) -> tuple[Consult, list[Referral]]:
        """The consult (404 unless visible) and its referrals: whoever sees a consult sees them all."""
        consult = self.consults.get(principal, consult_id)
        viewer = self.consults.viewer(principal)
        return consult, self.store.search(viewer, ReferralFilters(consult_id=consult_id, limit=1000))

    def search(self, principal: Principal, filters: ReferralFilters) -> list[Referral]:
        return self.store.search(self.consults.viewer(principal), filters)

    def history(self, referrals: Iterable[Referral]) -> dict[str, list[ReferralStep]]:
        return self.store.history(r.referral_id for r in referrals)

    def _check_visible(self, referral_id: str, referral: Referral | None, viewer: ConsultViewer) -> Referral:
        message = f"referral {referral_id[:40]} does not exist or is not visible to {viewer.username}"
        consult = None if referral is None else self.consults.store.get(referral.consult_id)
        if referral is None or consult is None:
            raise NotFoundError(message)
        if not referral_visible_to(referral, consult, viewer):
            raise HiddenError(
                message,
                study_instance_uid=referral.study_instance_uid,
                patient_id=referral.patient_id,
                detail=(
                    f"referral {referral.referral_id} from {referral.issuing_organisation} to "
                    f"{referral.target.organisation} is outside the caller's view"
                ),
            )
        return referral

    # -- issuing -------------------------------------------------------------------

    def issue(
        self,
        principal: Principal,
        consult_id: str,
        *,
        direction: Direction | str,
        reason: str,
        green_channel: bool | None = None,
        clinical_summary: str | None = None,
        instructions: str | None = None,
        target_organisation: str | None = None,
        target_department: str | None = None,
        target_specialist: str | None = None,
    ) -> Referral:
        """A new referral of the consult's patient, up or down, by a specialist (or admin) who sees it."""
        direction = Direction(direction)
        now = self.now()
        with writing(self.engine) as conn:
            locked = self.consults.lock(conn, consult_id, principal)
            consult = locked.consult
            if principal.role not in _ISSUERS:
                raise PermissionDeniedError(
                    f"referrals are issued by specialists (or admins); {principal.username} is "
                    f"{principal.role.value}"
                )
            if consult.status not in REFERABLE:
                raise ConsultStateError(
                    f"consult {consult_id} is {consult.status.value}; a referral is issued from a consult "
                    "a specialist has accepted, and that is not declined or cancelled"
                )
            text = check_text(reason, "the reason for the referral", MAX_REASON, required=True)
            summary = check_text(clinical_summary, "the clinical summary", MAX_SUMMARY, required=False)
            follow_up = check_text(instructions, "the instructions", MAX_SUMMARY, required=False)
            if green_channel and direction is Direction.DOWN:
                raise InvalidReferralError(
                    "the green channel is for up referrals (a critical patient received at once above); "
                    "a down referral cannot take it"
                )
            target = self._target(
                principal,
                consult,
                direction,
                organisation=target_organisation,
                department=target_department,
                specialist=target_specialist,
            )
            duplicate = self.store.open_duplicate(conn, locked.pk, direction, target.organisation)
            if duplicate is not None:
                raise ReferralStateError(
                    f"consult {consult_id} has an open {direction.value} referral to {target.organisation} "
                    f"already ({duplicate}); cancel it before issuing another"
                )
            referral = Referral(
                referral_id=str(uuid.uuid4()),
                consult_id=consult.consult_id,
                study_instance_uid=consult.study_instance_uid,
                patient_id=consult.patient_id,
                issuer_of_patient_id=consult.issuer_of_patient_id,
                patient_organisation=consult.source_organisation,
                urgency=consult.urgency,
                direction=direction,
                green_channel=default_green_channel(direction, consult.urgency)
                if green_channel is None
                else green_channel,
                reason=text or "",
                clinical_summary=summary,
                instructions=follow_up,
                target=target,
                issued_by=principal.username,
                issuing_organisation=principal.organisation,
                issued_at=now,
                status=ReferralStatus.ISSUED,
                status_note=None,
                updated_at=now,
            )
            step = ReferralStep(
                time=now,
                actor=principal.username,
                actor_organisation=principal.organisation,
                action=ReferralAction.ISSUE,
                from_status=None,
                to_status=ReferralStatus.ISSUED,
                note=text,
            )
            self.store.insert(conn, locked.pk, referral, step)
        logger.info(
            "referral %s of consult %s issued by %s: %s to %s%s",
            referral.referral_id,
            consult_id,
            principal.username,
            direction.value,
            target.describe(),
            " (green channel)" if referral.green_channel else "",
        )
        self.bus.publish(referral_event(EventType.REFERRAL_ISSUED, referral, principal.username))
        return referral

    def _target(
        self,
        principal: Principal,
        consult: Consult,
        direction: Direction,
        *,
        organisation: str | None,
        department: str | None,
        specialist: str | None,
    ) -> ReferralTarget:
        """The target named, checked against the tree; unnamed, the usual one for the direction."""
        tree = self.identity.organisation_tree()
        if specialist:
            user = self.identity.user(specialist)
            if user is None or user.disabled or user.role is Role.ADMIN:
                raise InvalidReferralError(f"{specialist} is not an active clinician; name one who is")
            if organisation and organisation != user.organisation:
                raise InvalidReferralError(f"{specialist} belongs to {user.organisation}, not {organisation}")
            organisation = user.organisation
        requesting = self._requesting_organisation(consult)

        def check(candidate: str) -> str:
            return check_target_organisation(
                direction,
                candidate,
                tree=tree,
                patient_organisation=consult.source_organisation,
                requesting_organisation=requesting,
                issuing_organisation=principal.organisation,
            )

        if organisation is None:
            organisation = _default_target(direction, consult.source_organisation, requesting, tree, check)
        organisation = check(organisation)
        if department:
            try:
                check_department_code(department)
            except ValueError as exc:
                raise InvalidReferralError(str(exc)) from exc
            if not self.departments.department(organisation, department):
                raise InvalidReferralError(f"department {department} of {organisation} has no members")
        return ReferralTarget(organisation, department or None, specialist or None)

    def _requesting_organisation(self, consult: Consult) -> str:
        """The organisation of the consult's requester; a down referral goes back there (or below)."""
        user = self.identity.user(consult.requested_by)
        return user.organisation if user is not None else consult.source_organisation

    # -- changing state --------------------------------------------------------------

    def accept(self, principal: Principal, referral_id: str, note: str | None = None) -> Referral:
        return self._transition(
            principal,
            referral_id,
            ReferralAction.ACCEPT,
            _addressee("accept"),
            note,
            "the note",
            required=False,
        )

    def decline(self, principal: Principal, referral_id: str, reason: str) -> Referral:
        return self._transition(
            principal,
            referral_id,
            ReferralAction.DECLINE,
            _addressee("decline"),
            reason,
            "a reason to decline",
        )

    def complete(self, principal: Principal, referral_id: str, note: str) -> Referral:
        """The target side saw the patient (up) or did the follow-up (down), and says how it went."""

        def allowed(referral: Referral, viewer: ConsultViewer) -> None:
            if not is_target_side(referral, viewer):
                raise PermissionDeniedError(
                    f"referral {referral.referral_id} is completed by {referral.target.organisation} "
                    "(or those above it), where the patient was sent"
                )

        return self._transition(
            principal, referral_id, ReferralAction.COMPLETE, allowed, note, "a note on the outcome"
        )

    def cancel(self, principal: Principal, referral_id: str, reason: str) -> Referral:
        def allowed(referral: Referral, viewer: ConsultViewer) -> None:
            if not is_issuing_side(referral, viewer):
                raise PermissionDeniedError(
                    f"referral {referral.referral_id} is cancelled by its issuer ({referral.issued_by}) or "
                    f"an admin of {referral.issuing_organisation}; the target side declines instead"
                )

        return self._transition(
            principal, referral_id, ReferralAction.CANCEL, allowed, reason, "a reason to cancel"
        )

    def _transition(
        self,
        principal: Principal,
        referral_id: str,
        action: ReferralAction,
        allowed: Allowed,
        note: str | None,
        what: str,
        *,
        required: bool = True,
    ) -> Referral:
        viewer = self.consults.viewer(principal)
        now = self.now()
        with writing(self.engine) as conn:
            locked = self.store.lock(conn, referral_id) if _is_uuid(referral_id) else None
            referral = self._check_visible(referral_id, locked[1] if locked else None, viewer)
            assert locked is not None
            allowed(referral, viewer)
            status = next_status(referral_id, referral.status, action)
            text = check_text(note, what, MAX_NOTE, required=required)
            changed = self.store.update_status(conn, locked[0], status, text, now)
            self.store.add_step(
                conn,
                locked[0],
                ReferralStep(
                    time=now,
                    actor=principal.username,
                    actor_organisation=principal.organisation,
                    action=action,
                    from_status=referral.status,
                    to_status=status,
                    note=text,
                ),
            )
        logger.info(
            "referral %s %s by %s: %s -> %s",
            referral_id,
            action.value,
            principal.username,
            referral.status,
            status,
        )
        extra = {"note": text} if text else {}
        self.bus.publish(referral_event(_EVENTS[action], changed, principal.username, **extra))
        return changed


def _addressee(what: str) -> Allowed:
    """Accepting and declining: the target side; only the named person (or an admin) when one is named."""

    def allowed(referral: Referral, viewer: ConsultViewer) -> None:
        if not is_target_side(referral, viewer):
            raise PermissionDeniedError(
                f"referral {referral.referral_id} is addressed to {referral.target.organisation}; only its "
                f"users (or those above it) {what} it"
            )
        named = referral.target.specialist
        if named and viewer.username != named and viewer.role is not Role.ADMIN:
            raise PermissionDeniedError(
                f"referral {referral.referral_id} is addressed to {named}; only they or an admin {what} it"
            )

    return allowed


def _default_target(
    direction: Direction,
    patient_organisation: str,
    requesting_organisation: str,
    tree: Mapping[str, str | None],
    check: Callable[[str], str],
) -> str:
    """Up: the top of the patient's tree (the county hospital). Down: the requester's organisation.

    Down falls back to the patient's organisation when the requester sits at
    the issuer's level or above (a county doctor asked for the consult).
    """
    if direction is Direction.UP:
        above = ancestors(patient_organisation, tree)
        if not above:
            raise InvalidReferralError(
                f"the patient's organisation {patient_organisation} has none above it to refer up to"
            )
        return above[-1]
    for candidate in dict.fromkeys((requesting_organisation, patient_organisation)):
        try:
            return check(candidate)
        except InvalidReferralError:
            continue
    raise InvalidReferralError(
        f"neither {requesting_organisation} nor {patient_organisation} is below the issuer; "
        "name target_organisation"
    )


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
