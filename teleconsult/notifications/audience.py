"""Who may receive an event: the same rules as reading the study or the consult over HTTP.

- ``study.stored`` and ``alert.critical``: users whose organisation scope
  (their organisation and those below it) holds the study's source
  organisation, and users to whom a consult that is not declined or
  cancelled shares the study (``ConsultStore.grants_study``, what DICOMweb
  asks when the scope check fails). An ``alert.critical`` without a study
  (a health kiosk's vital signs) reaches the scope of its
  ``source_organisation`` only.
- ``consult.*`` and ``report.*``: whoever ``visible_to`` lets see the
  consult as it was when the event happened (the requesting side's scope,
  the assignee, the named specialist, pool or department members while it
  waits, the target's admins and leads).
- ``referral.*``: whoever sees the referral's consult, and the users of
  its target organisation and the organisations above it;
- ``consult.overdue``: its ``recipients`` (the leads or admins the
  escalation chose).

The scope check is in memory (each connection carries its principal, re-read
from the database every few seconds by the hub). Only users outside a
study's scope cost a query, and the answer is cached per study and user for
``grant_ttl`` seconds and dropped as soon as a consult event names the study,
so a consult that starts (or stops) sharing it takes effect at the next event.
Not thread-safe: one dispatcher thread owns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Engine

from teleconsult.consults.access import viewer_of
from teleconsult.domain.consults import Consult, ConsultStatus, ConsultViewer, Target, visible_to
from teleconsult.domain.identity import Principal
from teleconsult.events import Event
from teleconsult.notifications.protocol import PublicEventType
from teleconsult.storage.consults import ConsultStore
from teleconsult.storage.departments import DepartmentStore
from teleconsult.storage.identity import IdentityStore

__all__ = ["Audience", "Member"]

logger = logging.getLogger(__name__)

_STUDY_EVENTS = frozenset({PublicEventType.STUDY_STORED, PublicEventType.ALERT_CRITICAL})
_REFERRAL_EVENTS = frozenset(t for t in PublicEventType if t.value.startswith("referral."))
_MAX_CACHED_STUDIES = 10_000


class Member(Protocol):
    """A connected user as the audience rule sees them."""

    @property
    def principal(self) -> Principal: ...

    @property
    def viewer(self) -> ConsultViewer: ...


class Audience:
    def __init__(
        self,
        engine: Engine,
        identity: IdentityStore,
        *,
        grant_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.departments = DepartmentStore(engine)
        self.consults = ConsultStore(engine)
        self.grant_ttl = grant_ttl
        self.clock = clock
        # study UID -> (when first asked, username -> whether a consult shares the study with them)
        self._grants: OrderedDict[str, tuple[float, dict[str, bool]]] = OrderedDict()
        # study UID -> source organisation (never changes once stored)
        self._owners: OrderedDict[str, str] = OrderedDict()

    # -- who is connected --------------------------------------------------------

    def resolve(self, username: str) -> tuple[Principal, ConsultViewer] | None:
        """The user's current principal and consult view; None once disabled or removed."""
        principal = self.identity.principal(username)
        if principal is None:
            return None
        return principal, viewer_of(principal, self.departments)

    # -- who receives an event ---------------------------------------------------------

    def recipients(self, event: Event, members: Sequence[Member]) -> list[Member]:
        if event.type in _STUDY_EVENTS:
            return self._study_audience(event.data, members)
        uid = event.data.get("study_instance_uid")
        if uid:
            self._grants.pop(str(uid), None)  # consult events change what a consult shares
        if event.type == PublicEventType.CONSULT_OVERDUE:
            recipients = set(event.data.get("recipients") or ())
            return [m for m in members if m.principal.username in recipients]
        consult = self._consult_at(event.data)
        if event.type in _REFERRAL_EVENTS:
            # Whoever sees the consult, and the referral's target organisation and those above it.
            target = str(event.data.get("target_organisation") or "")
            return [
                m
                for m in members
                if (target and m.principal.can_see(target))
                or (consult is not None and visible_to(consult, m.viewer))
            ]
        if consult is None:
            # Unknown consult (removed, or another database): the requesting side's scope only.
            return self.in_scope(event, members)
        return [m for m in members if visible_to(consult, m.viewer)]

    def in_scope(self, event: Event, members: Sequence[Member]) -> list[Member]:
        """Those whose organisation scope holds the event's source organisation: no query needed."""
        source = str(event.data.get("source_organisation") or "")
        return [m for m in members if source and m.principal.can_see(source)]

    def _study_audience(self, data: dict[str, Any], members: Sequence[Member]) -> list[Member]:
        uid = str(data.get("study_instance_uid") or "")
        if not uid:
            # No study (a health kiosk's alert.critical): the source organisation's scope only.
            source = str(data.get("source_organisation") or "")
            return [m for m in members if source and m.principal.can_see(source)]
        source = str(data.get("source_organisation") or "") or self._owner(uid)
        inside = [m for m in members if source and m.principal.can_see(source)]
        outside = [m for m in members if not (source and m.principal.can_see(source))]
        return inside + [m for m in outside if self._granted(uid, m)]

    def _granted(self, uid: str, member: Member) -> bool:
        now = self.clock()
        entry = self._grants.get(uid)
        if entry is None or now - entry[0] > self.grant_ttl:
            entry = (now, {})
            self._grants[uid] = entry
            while len(self._grants) > _MAX_CACHED_STUDIES:
                self._grants.popitem(last=False)
        self._grants.move_to_end(uid)
        answers = entry[1]
        username = member.principal.username
        if username not in answers:
            answers[username] = self.consults.grants_study(member.viewer, uid)
        return answers[username]

    def _owner(self, uid: str) -> str:
        owner = self._owners.get(uid)
        if owner is None:
            study = self.consults.study(uid)
            if study is None:
                return ""
            owner = study.source_organisation
            self._owners[uid] = owner
            while len(self._owners) > _MAX_CACHED_STUDIES:
                self._owners.popitem(last=False)
        return owner

    def _consult_at(self, data: dict[str, Any]) -> Consult | None:
        """The consult as the event describes it: stored row, with the event's state and addressees.

        The row may have moved on since (accepted a moment after it was
        requested); the event must reach those who could see it *then*.
        """
        consult_id = data.get("consult_id")
        stored = self.consults.get(str(consult_id)) if consult_id else None
        if stored is None:
            return None
        changes: dict[str, Any] = {"assignee": data.get("assignee", stored.assignee)}
        with contextlib.suppress(KeyError, ValueError):
            changes["status"] = ConsultStatus(data["status"])
        target = data.get("target")
        if isinstance(target, dict) and target.get("organisation"):
            changes["target"] = Target(
                organisation=str(target["organisation"]),
                department=target.get("department"),
                specialist=target.get("specialist"),
            )
        return dataclasses.replace(stored, **changes)
