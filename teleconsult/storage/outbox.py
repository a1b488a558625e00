"""The forwarding queue: which stored instances go to which peer, and how far each got.

Routing and queueing live here, beside the index, because the queue must be
exactly as durable as the index: ``enqueue`` is the ``on_indexed`` hook of
``Index.put_instance`` and writes its rows in the transaction that indexes
the instance, so an instance that is indexed always has its rows and one
that is not never has any. A duplicate (same SOP instance, same bytes)
indexes nothing and queues nothing.

The forwarder (``dicom_gateway/forwarder.py``) works the queue the way
Orthanc's ``queues-and-kvs.py`` sample does, claim then acknowledge:

``pending``
    waiting for its study to be stable and its ``next_attempt_at``; after a
    failure ``last_error`` says why and ``attempts`` how often it failed.
``sending``
    claimed by one forwarder (``claimed_by``, ``claimed_at``); a claim is
    exclusive (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a status-guarded
    ``UPDATE`` under SQLite's single writer). Claims of a process that died
    go back to ``pending`` once older than a few minutes (``reclaim_stale``).
``sent``
    the peer answered Success or Warning (``sent_at``).
``failed``
    given up after ``TELECONSULT_DICOM_FORWARD_MAX_ATTEMPTS``; ``retry``
    puts it back.

Delivery is at least once: a process that dies after the peer stored an
instance but before the row was marked sent sends it again, which a PACS
treats as the same SOP instance.

``list_entries`` and ``counts`` are what the CLI prints and what an
authenticated API route will return; rows carry their source organisation so
that route can show each organisation only its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, Table, case, func, select, update

from teleconsult.config import SOURCE_PACS, DicomPeer, ForwardRule, Settings
from teleconsult.domain.instances import InstanceAttributes
from teleconsult.storage.index import Index, IndexedFile, IndexResult
from teleconsult.storage.tables import ForwardQueueEntry, Instance, Series, Study

__all__ = [
    "ForwardEntry",
    "ForwardStatus",
    "Outbox",
    "Route",
    "backoff_seconds",
    "route",
]

logger = logging.getLogger(__name__)

# A Table, not just a FromClause: it is inserted into and updated.
_queue = cast(Table, ForwardQueueEntry.__table__)
_instances = Instance.__table__
_series = Series.__table__
_studies = Study.__table__

# Candidate (destination, study) groups read per claim: enough that racing
# forwarders which lose the first group find another one.
_GROUPS_PER_CLAIM = 16
_ERROR_LENGTH = 1024


class ForwardStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Route:
    """One destination of one instance, and the rule that chose it."""

    destination_ae_title: str
    rule: str


def _rule_matches(rule: ForwardRule, source_organisation: str, modality: str, sop_class_uid: str) -> bool:
    if "*" not in rule.from_organisations and source_organisation not in rule.from_organisations:
        return False
    if rule.modalities is not None and modality.strip().upper() not in rule.modalities:
        return False
    return rule.sop_classes is None or sop_class_uid in rule.sop_classes


def route(
    rules: Sequence[ForwardRule],
    peers: Sequence[DicomPeer],
    *,
    source_organisation: str,
    modality: str,
    sop_class_uid: str,
    calling_ae_title: str = "",
) -> list[Route]:
    """Where one instance goes: every matching rule's destination, each once.

    ``source-pacs`` resolves to the peer marked ``pacs`` of the instance's
    source organisation; an organisation without one is skipped. An instance
    is never sent back to the AE it came from, so a rule such as "everything
    from TOWN01 to TOWN01's PACS" does not echo the PACS's own images back to
    it. When two rules name the same destination the first rule is recorded.
    """
    pacs_of = {peer.organisation: peer.ae_title for peer in peers if peer.pacs}
    sender = calling_ae_title.strip()
    routes: list[Route] = []
    seen: set[str] = set()
    for rule in rules:
        if not _rule_matches(rule, source_organisation, modality, sop_class_uid):
            continue
        if rule.destination == SOURCE_PACS:
            destination = pacs_of.get(source_organisation)
            if destination is None:
                logger.debug(
                    "rule %s: organisation %s has no PACS peer; not forwarded", rule.name, source_organisation
                )
                continue
        else:
            destination = rule.destination
        if destination == sender or destination in seen:
            continue
        seen.add(destination)
        routes.append(Route(destination, rule.name))
    return routes


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` earlier failed ones: base * 2**attempts, capped."""
    return float(min(base * 2 ** min(attempts, 32), cap))


@dataclass(frozen=True, slots=True)
class ForwardEntry:
    """One row of the queue as the rest of the code sees it."""

    pk: int
    sop_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_key: str
    destination_ae_title: str
    rule: str
    source_organisation: str
    status: ForwardStatus
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "destination_ae_title": self.destination_ae_title,
            "rule": self.rule,
            "source_organisation": self.source_organisation,
            "status": self.status.value,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "claimed_by": self.claimed_by,
            "claimed_at": _iso(self.claimed_at),
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "sent_at": _iso(self.sent_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _entry(row: Any) -> ForwardEntry:
    return ForwardEntry(
        pk=row.pk,
        sop_instance_uid=row.sop_instance_uid,
        study_instance_uid=row.study_instance_uid,
        sop_class_uid=row.sop_class_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
        file_key=row.file_key,
        destination_ae_title=row.destination_ae_title,
        rule=row.rule,
        source_organisation=row.source_organisation,
        status=ForwardStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=_aware(row.next_attempt_at),  # type: ignore[arg-type]
        claimed_by=row.claimed_by,
        claimed_at=_aware(row.claimed_at),
        last_error=row.last_error,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        sent_at=_aware(row.sent_at),
    )


class Outbox:
    """The forwarding queue of one index, routed by the settings' forward rules.

    Writes go through the index's writer (one lock and ``BEGIN IMMEDIATE`` on
    SQLite), so queue updates and C-STOREs being indexed never fight over
    SQLite's single write lock.
    """

    def __init__(
        self, index: Index, settings: Settings, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.index = index
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- enqueue (inside the index transaction) ------------------------------

    def routes_for(self, attrs: InstanceAttributes, stored: IndexedFile) -> list[Route]:
        return route(
            self.settings.dicom_forward_rules,
            self.settings.dicom_peers,
            source_organisation=stored.source_organisation,
            modality=attrs.modality,
            sop_class_uid=attrs.sop_class_uid,
            calling_ae_title=stored.calling_ae_title,
        )

    def enqueue(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, result: IndexResult
    ) -> None:
        """The ``on_indexed`` hook: queue the instance for each destination, in the caller's transaction.

        It raises whatever the database raises, which rolls the index row
        back too: an instance is never indexed without its queue rows.
        """
        if not self.settings.dicom_forward_rules:
            return
        routes = self.routes_for(attrs, stored)
        if not routes:
            return
        now = self._clock()
        conn.execute(
            _queue.insert(),
            [
                {
                    "sop_instance_uid": attrs.sop_instance_uid,
                    "study_instance_uid": attrs.study_instance_uid,
                    "sop_class_uid": attrs.sop_class_uid,
                    "transfer_syntax_uid": attrs.transfer_syntax_uid,
                    "file_key": stored.file_key,
                    "destination_ae_title": destination.destination_ae_title,
                    "rule": destination.rule,
                    "source_organisation": stored.source_organisation,
                    "status": ForwardStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for destination in routes
            ],
        )
        logger.debug(
            "queued %s (version %d) for %s",
            attrs.sop_instance_uid,
            result.version,
            ", ".join(r.destination_ae_title for r in routes),
        )

    # -- claiming and acknowledging (the forwarder) -------------------------

    def claim(self, worker: str, *, limit: int = 500, now: datetime | None = None) -> list[ForwardEntry]:
        """Claim the due rows of one stable study for one destination, oldest first.

        A study is stable once none of its instances was received for
        ``dicom_forward_stable_seconds``. Returns an empty list when nothing
        is due. Each row is claimed by one caller only, however many
        forwarders race.
        """
        now = now or self._clock()
        for destination, study in self._due_groups(now):
            entries = self._claim_group(worker, destination, study, limit, now)
            if entries:
                return entries
        return []

    def _due_groups(self, now: datetime) -> list[tuple[str, str]]:
        q = _queue.c
        stmt = select(q.destination_ae_title, q.study_instance_uid).where(
            q.status == ForwardStatus.PENDING.value, q.next_attempt_at <= now
        )
        stable = self.settings.dicom_forward_stable_seconds
        if stable > 0:
            # Studies that received an instance lately: few rows, found
            # through the received_at index, whatever the backlog.
            unstable = (
                select(_studies.c.study_instance_uid)
                .select_from(
                    _instances.join(_series, _instances.c.series_pk == _series.c.pk).join(
                        _studies, _series.c.study_pk == _studies.c.pk
                    )
                )
                .where(_instances.c.received_at > now - timedelta(seconds=stable))
            )
            stmt = stmt.where(q.study_instance_uid.not_in(unstable))
        stmt = (
            stmt.group_by(q.destination_ae_title, q.study_instance_uid)
            .order_by(func.min(q.next_attempt_at), func.min(q.pk))
            .limit(_GROUPS_PER_CLAIM)
        )
        with self.index._read() as conn:
            return [(row[0], row[1]) for row in conn.execute(stmt)]

    def _claim_group(
        self, worker: str, destination: str, study: str, limit: int, now: datetime
    ) -> list[ForwardEntry]:
        q = _queue.c
        wanted = (
            select(q.pk)
            .where(
                q.destination_ae_title == destination,
                q.study_instance_uid == study,
                q.status == ForwardStatus.PENDING.value,
                q.next_attempt_at <= now,
            )
            .order_by(q.pk)
            .limit(limit)
        )
        if self.index.dialect == "postgresql":
            # Rows another forwarder is claiming right now are skipped, not waited for.
            wanted = wanted.with_for_update(skip_locked=True)
        with self.index._writing() as conn:
            rows = conn.execute(
                update(_queue)
                # The status guard makes the claim exclusive even where the
                # subquery cannot lock (SQLite: one writer at a time anyway).
                .where(q.pk.in_(wanted), q.status == ForwardStatus.PENDING.value)
                .values(status=ForwardStatus.SENDING.value, claimed_by=worker, claimed_at=now)
                .returning(*_queue.c)
            ).all()
        return sorted((_entry(row) for row in rows), key=lambda entry: entry.pk)

    def acknowledge(self, worker: str, pks: Iterable[int], *, now: datetime | None = None) -> int:
        """Mark claimed rows sent; returns how many were still this worker's claim."""
        pks = list(pks)
        if not pks:
            return 0
        now = now or self._clock()
        q = _queue.c
        with self.index._writing() as conn:
            count = conn.execute(
                update(_queue)
                .where(q.pk.in_(pks), q.status == ForwardStatus.SENDING.value, q.claimed_by == worker)
                .values(
                    status=ForwardStatus.SENT.value, sent_at=now, attempts=q.attempts + 1, last_error=None
                )
            ).rowcount
        if count != len(pks):
            logger.warning(
                "%d of %d sent forward rows were no longer claimed by %s (reclaimed as stale?); "
                "they will be sent again",
                len(pks) - count,
                len(pks),
                worker,
            )
        return int(count)

    def retry_later(
        self, worker: str, failures: Sequence[tuple[int, str]], *, now: datetime | None = None
    ) -> tuple[int, int]:
        """Record a failed attempt per row: back to pending after a backoff, or failed.

        The delay is ``retry_base * 2**attempts`` capped at
        ``max_retry_seconds``; once ``max_attempts`` (if set) is reached the
        row is ``failed``. Returns (rows rescheduled, rows failed).
        """
        if not failures:
            return 0, 0
        now = now or self._clock()
        settings = self.settings
        errors = dict(failures)
        q = _queue.c
        rescheduled = failed = 0
        with self.index._writing() as conn:
            rows = conn.execute(
                select(q.pk, q.attempts).where(
                    q.pk.in_(list(errors)),
                    q.status == ForwardStatus.SENDING.value,
                    q.claimed_by == worker,
                )
            ).all()
            for row in rows:
                attempts = row.attempts + 1
                error = errors[row.pk][:_ERROR_LENGTH]
                if settings.dicom_forward_max_attempts and attempts >= settings.dicom_forward_max_attempts:
                    values: dict[str, Any] = {"status": ForwardStatus.FAILED.value}
                    failed += 1
                else:
                    delay = backoff_seconds(
                        row.attempts,
                        settings.dicom_forward_retry_base_seconds,
                        settings.dicom_forward_max_retry_seconds,
                    )
                    values = {
                        "status": ForwardStatus.PENDING.value,
                        "next_attempt_at": now + timedelta(seconds=delay),
                    }
                    rescheduled += 1
                conn.execute(
                    update(_queue).where(q.pk == row.pk).values(attempts=attempts, last_error=error, **values)
                )
        return rescheduled, failed

    def release(self, worker: str, pks: Iterable[int]) -> int:
        """Give claimed rows back unsent, without counting an attempt (shutdown, deferral)."""
        pks = list(pks)
        if not pks:
            return 0
        q = _queue.c
        with self.index._writing() as conn:
            return int(
                conn.execute(
                    update(_queue)
                    .where(q.pk.in_(pks), q.status == ForwardStatus.SENDING.value, q.claimed_by == worker)
                    .values(status=ForwardStatus.PENDING.value)
                ).rowcount
            )

    def touch(self, worker: str, *, now: datetime | None = None) -> int:
        """Renew this worker's claims, so a long association is not taken for a dead one."""
        now = now or self._clock()
        q = _queue.c
        with self.index._writing() as conn:
            return int(
                conn.execute(
                    update(_queue)
                    .where(q.status == ForwardStatus.SENDING.value, q.claimed_by == worker)
                    .values(claimed_at=now)
                ).rowcount
            )

    def reclaim_stale(self, older_than_seconds: float, *, now: datetime | None = None) -> int:
        """Put rows whose claim is older than ``older_than_seconds`` back to pending.

        Their forwarder died (crash, power loss) between claiming and
        acknowledging. The peer may already hold some of them; sending again
        is harmless (at least once).
        """
        now = now or self._clock()
        q = _queue.c
        with self.index._writing() as conn:
            count = int(
                conn.execute(
                    update(_queue)
                    .where(
                        q.status == ForwardStatus.SENDING.value,
                        q.claimed_at < now - timedelta(seconds=older_than_seconds),
                    )
                    .values(
                        status=ForwardStatus.PENDING.value,
                        next_attempt_at=now,
                        last_error="reclaimed: the forwarder that claimed it stopped before acknowledging",
                    )
                ).rowcount
            )
        if count:
            logger.warning("reclaimed %d forward rows left in 'sending' by a stopped forwarder", count)
        return count

    # -- operators: CLI now, authenticated API later -------------------------

    def list_entries(
        self,
        *,
        status: str | ForwardStatus | None = None,
        destination_ae_title: str | None = None,
        study_instance_uid: str | None = None,
        organisations: Sequence[str] | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[ForwardEntry]:
        """Queue rows, newest first; ``organisations`` limits them to those organisations' data."""
        q = _queue.c
        stmt = select(_queue).order_by(q.pk.desc())
        if status is not None:
            stmt = stmt.where(q.status == ForwardStatus(status).value)
        if destination_ae_title is not None:
            stmt = stmt.where(q.destination_ae_title == destination_ae_title)
        if study_instance_uid is not None:
            stmt = stmt.where(q.study_instance_uid == study_instance_uid)
        if organisations is not None:
            stmt = stmt.where(q.source_organisation.in_(list(organisations)))
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        with self.index._read() as conn:
            return [_entry(row) for row in conn.execute(stmt)]

    def counts(self, *, organisations: Sequence[str] | None = None) -> dict[str, int]:
        """Rows per status (every status present, zero included)."""
        q = _queue.c
        stmt = select(q.status, func.count()).group_by(q.status)
        if organisations is not None:
            stmt = stmt.where(q.source_organisation.in_(list(organisations)))
        result = {status.value: 0 for status in ForwardStatus}
        with self.index._read() as conn:
            for status, count in conn.execute(stmt):
                result[status] = int(count)
        return result

    def retry(self, pks: Sequence[int] | None = None, *, now: datetime | None = None) -> list[int]:
        """Make rows due now: the given pending or failed rows, or (``pks`` None) every failed row.

        A failed row starts a fresh count of attempts, so a configured
        ``max_attempts`` applies to the new tries; a pending row keeps its
        count. Sent and sending rows are left alone. Returns the rows changed.
        """
        now = now or self._clock()
        q = _queue.c
        stmt = update(_queue).values(
            status=ForwardStatus.PENDING.value,
            # SET sees the row as it was: only a failed row restarts its count.
            attempts=case((q.status == ForwardStatus.FAILED.value, 0), else_=q.attempts),
            next_attempt_at=now,
        )
        if pks is None:
            stmt = stmt.where(q.status == ForwardStatus.FAILED.value)
        else:
            stmt = stmt.where(
                q.pk.in_(list(pks)),
                q.status.in_([ForwardStatus.FAILED.value, ForwardStatus.PENDING.value]),
            )
        with self.index._writing() as conn:
            return sorted(row.pk for row in conn.execute(stmt.returning(q.pk)))
