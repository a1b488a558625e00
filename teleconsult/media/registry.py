"""Which replica holds which live session, in the index every replica shares.

A session's peer connections, encoders and recorder live in the memory of
the process that started it; another replica can only relay to it (the
relay is in ``teleconsult.api.live_relay``). This registry is how replicas
find each other's sessions: one row per session with the holder's
``TELECONSULT_REPLICA_URL``.

Liveness is a lease, not a connection: the holder pushes ``lease_until``
forward while the session runs (the hub's watchdog, every ``lease/3``).
A replica that dies stops doing so; once the lease lapsed, the session is
taken as gone, and the next start for its consult ends the row and claims
the consult. Replica clocks must agree within seconds (NTP; the bearer
tokens need it too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.tables import LiveSessionRow
from teleconsult.storage.transactions import reading, writing

__all__ = ["Holder", "SessionRegistry"]

logger = logging.getLogger(__name__)

_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Holder:
    """A session and the replica (its base URL) that holds it."""

    session_id: str
    replica_url: str


def _aware(value: datetime) -> datetime:
    """SQLite gives the stored UTC times back without their zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SessionRegistry:
    """The live sessions of every replica, as seen by the replica at ``replica_url``."""

    def __init__(self, engine: Engine, replica_url: str, *, lease_seconds: float = 15.0) -> None:
        self.engine = engine
        self.replica_url = replica_url.rstrip("/")
        self.lease = timedelta(seconds=lease_seconds)

    def is_mine(self, holder: Holder) -> bool:
        return holder.replica_url == self.replica_url

    # -- the holder's side ---------------------------------------------------------------

    def claim(self, session_id: str, consult_id: str) -> Holder:
        """Register ``session_id`` for the consult here, or the consult's running session elsewhere.

        Returns ``Holder(session_id, this replica)`` when the claim is ours;
        otherwise the session that runs for the consult (here or on another
        replica). A running row whose lease lapsed is ended on the way.
        """
        for _ in range(_CLAIM_ATTEMPTS):
            now = datetime.now(UTC)
            try:
                with writing(self.engine) as conn:
                    conn.execute(
                        insert(LiveSessionRow).values(
                            session_id=session_id,
                            consult_id=consult_id,
                            replica_url=self.replica_url,
                            started_at=now,
                            lease_until=now + self.lease,
                        )
                    )
                return Holder(session_id, self.replica_url)
            except IntegrityError:
                pass
            with writing(self.engine) as conn:
                row = conn.execute(
                    select(LiveSessionRow.pk, LiveSessionRow.session_id, LiveSessionRow.replica_url)
                    .where(LiveSessionRow.consult_id == consult_id, LiveSessionRow.ended_at.is_(None))
                    .where(LiveSessionRow.lease_until >= now)
                ).first()
                if row is not None:
                    return Holder(row.session_id, row.replica_url)
                lapsed = conn.execute(
                    update(LiveSessionRow)
                    .where(LiveSessionRow.consult_id == consult_id, LiveSessionRow.ended_at.is_(None))
                    .where(LiveSessionRow.lease_until < now)
                    .values(ended_at=now)
                ).rowcount
                if lapsed:
                    logger.warning(
                        "live: a session of consult %s held by a replica that stopped renewing it was "
                        "taken as gone",
                        consult_id,
                    )
        raise IndexUnavailableError(
            f"live session of consult {consult_id}: the registry of sessions kept changing while it "
            "was claimed; retry"
        )

    def renew(self, session_ids: Iterable[str]) -> int:
        """Push the leases of this replica's running sessions forward; how many rows were renewed."""
        ids = list(session_ids)
        if not ids:
            return 0
        with writing(self.engine) as conn:
            return conn.execute(
                update(LiveSessionRow)
                .where(
                    LiveSessionRow.session_id.in_(ids),
                    LiveSessionRow.replica_url == self.replica_url,
                    LiveSessionRow.ended_at.is_(None),
                )
                .values(lease_until=datetime.now(UTC) + self.lease)
            ).rowcount

    def release(self, session_id: str) -> None:
        """The session ended here."""
        with writing(self.engine) as conn:
            conn.execute(
                update(LiveSessionRow)
                .where(LiveSessionRow.session_id == session_id, LiveSessionRow.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
            )

    def release_all(self) -> int:
        """End every row of this replica still running: at start, its sessions died with the last process."""
        with writing(self.engine) as conn:
            return conn.execute(
                update(LiveSessionRow)
                .where(LiveSessionRow.replica_url == self.replica_url, LiveSessionRow.ended_at.is_(None))
                .values(ended_at=datetime.now(UTC))
            ).rowcount

    # -- every replica's side ----------------------------------------------------------------

    def holder(self, session_id: str) -> Holder | None:
        """Who holds a session: running with a live lease, or ended (the holder keeps its recording)."""
        with reading(self.engine) as conn:
            row = conn.execute(
                select(LiveSessionRow.replica_url, LiveSessionRow.lease_until, LiveSessionRow.ended_at).where(
                    LiveSessionRow.session_id == session_id
                )
            ).first()
        if row is None:
            return None
        if row.ended_at is None and _aware(row.lease_until) < datetime.now(UTC):
            return None
        return Holder(session_id, row.replica_url)

    def running(self, consult_id: str) -> Holder | None:
        """The consult's running session with a live lease, wherever it is."""
        with reading(self.engine) as conn:
            row = conn.execute(
                select(LiveSessionRow.session_id, LiveSessionRow.replica_url).where(
                    LiveSessionRow.consult_id == consult_id,
                    LiveSessionRow.ended_at.is_(None),
                    LiveSessionRow.lease_until >= datetime.now(UTC),
                )
            ).first()
        return None if row is None else Holder(row.session_id, row.replica_url)

    def replicas_of(self, consult_id: str) -> list[str]:
        """Every other replica that held a session of the consult (where its recordings are)."""
        with reading(self.engine) as conn:
            urls = conn.execute(
                select(LiveSessionRow.replica_url)
                .where(LiveSessionRow.consult_id == consult_id)
                .where(LiveSessionRow.replica_url != self.replica_url)
                .distinct()
            ).scalars()
            return sorted(urls)
