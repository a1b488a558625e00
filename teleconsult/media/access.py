"""Who may take which role in a consult's live session.

The caller must see the consult at all (``visible_to``; otherwise the
session answers 404 like one that does not exist). Then:

- the **sender** is the consult's requesting side (``is_requesting_side``):
  the township's sonographer or doctor whose patient is examined;
- anyone else who sees the consult, above all the county specialists it is
  addressed to, may be a **viewer** (the requesting side may watch too);
- admins take no part: they manage accounts, not patients;
- a declined or cancelled consult has no live exam.
"""

from __future__ import annotations

from teleconsult.domain.consults import CLOSED, Consult, ConsultViewer, is_requesting_side
from teleconsult.domain.identity import Role
from teleconsult.media.sessions import ParticipantRole

__all__ = ["allowed_roles"]


def allowed_roles(consult: Consult, viewer: ConsultViewer) -> frozenset[ParticipantRole]:
    """The roles ``viewer`` (who can see ``consult``) may take in its live session; empty for none."""
    if viewer.role is Role.ADMIN or consult.status in CLOSED:
        return frozenset()
    if is_requesting_side(consult, viewer):
        return frozenset({ParticipantRole.SENDER, ParticipantRole.VIEWER})
    return frozenset({ParticipantRole.VIEWER})
