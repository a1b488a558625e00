"""The audit trail: who touched which patient's data, how, when, from where.

Every read or write of patient data over any interface (HTTP, DICOMweb,
DICOM, WebSocket, CLI) is recorded, including refused attempts. Rows are
only ever inserted; each carries a SHA-256 chained to the previous row, so
tampering with the table is detectable (``AuditLog.verify``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Engine, String, and_, bindparam, false, func, or_, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg as psycopg_dialect
from sqlalchemy.exc import DBAPIError

from teleconsult.storage.tables import AuditRecord
from teleconsult.storage.transactions import reader

__all__ = ["AuditEvent", "AuditLog", "AuditOutcome", "Interface"]

logger = logging.getLogger(__name__)

_audit = AuditRecord.__table__
_GENESIS = "0" * 64


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"  # authenticated or not, the caller had no right
    FAILURE = "failure"  # the operation failed for another reason


class Interface(StrEnum):
    HTTP = "http"
    DICOMWEB = "dicomweb"
    DICOM = "dicom"
    WEBSOCKET = "websocket"
    CLI = "cli"
    MQTT = "mqtt"  # health kiosks publishing measurements (device_adapters/kiosk/mqtt.py)
    INBOX = "inbox"  # files dropped in a watched folder (device_adapters/ecg/inbox.py)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str  # e.g. "study.read", "instance.store", "query", "login"
    outcome: AuditOutcome
    interface: Interface
    actor: str  # username, or the calling AE title for DICOM
    resource: str  # path, or DIMSE service and level
    actor_organisation: str | None = None
    role: str | None = None
    source_address: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    detail: str = ""


def _canonical(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)


def _digest(previous: str, values: dict[str, Any]) -> str:
    return hashlib.sha256((previous + _canonical(values)).encode("utf-8")).hexdigest()


# PostgreSQL's form of ``_digest`` over the newest row, in the INSERT itself.
_CHAINED_INSERT = _audit.insert().values(
    **{
        column.name: bindparam(column.name)
        for column in _audit.c
        if column.name not in ("pk", "chain_sha256")
    },
    chain_sha256=func.encode(
        func.sha256(
            func.convert_to(
                func.coalesce(
                    select(_audit.c.chain_sha256).order_by(_audit.c.pk.desc()).limit(1).scalar_subquery(),
                    _GENESIS,
                ).concat(bindparam("canonical", type_=String)),
                "UTF8",
            )
        ),
        "hex",
    ),
)

_CHAINED_INSERT_COMPILED = _CHAINED_INSERT.compile(dialect=psycopg_dialect())
_CHAINED_INSERT_SQL = str(_CHAINED_INSERT_COMPILED)
# Bound constants of the statement (the genesis value), beside the row's own values.
_CHAINED_INSERT_CONSTANTS = {
    name: value for name, value in _CHAINED_INSERT_COMPILED.params.items() if value is not None
}


# Column widths (migration 0005): values are cut to fit before they are
# hashed, so that PostgreSQL never refuses an audit row for a long value (a
# refused audit row fails the request) and the digest covers what is stored.
_WIDTHS = {
    "action": 64,
    "actor": 64,
    "actor_organisation": 64,
    "role": 32,
    "source_address": 64,
    "resource": 512,
    "study_instance_uid": 64,
    "patient_id": 64,
    "detail": 1024,
}


def _row_values(event: AuditEvent, time: datetime) -> dict[str, Any]:
    values = asdict(event)
    values["outcome"] = event.outcome.value
    values["interface"] = event.interface.value
    values["time"] = time.isoformat()
    for name, value in values.items():
        # PostgreSQL text holds no NUL, and a peer may put one in a UID or a path: the refusal of
        # such a STOW-RS part failed to be audited, and the request with it (HTTP 500)
        if isinstance(value, str) and "\x00" in value:
            values[name] = value.replace("\x00", "\ufffd")
    for name, width in _WIDTHS.items():
        if values[name] is not None:
            values[name] = values[name][:width]
    return values


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already.

    SQLite keeps the wall-clock text without an offset, so every bound value
    must be UTC for comparisons to mean what they say.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The chain needs rows in order; one writer per process, and on
        # PostgreSQL a transaction-level advisory lock across processes.
        self._lock = threading.Lock()

    def record(self, event: AuditEvent) -> None:
        """Append one event. Failing to audit is logged loudly and re-raised."""
        self.record_many([event])

    def record_many(self, events: Iterable[AuditEvent]) -> None:
        """Append several events in one transaction, chained in the order given.

        The DICOM gateway writes what one association stored this way: one
        transaction per association, not one per instance.
        """
        time = datetime.now(UTC)
        rows = [(event, _row_values(event, time)) for event in events]
        if not rows:
            return
        with self._lock:
            try:
                if self.engine.dialect.name == "postgresql":
                    self._append_postgresql(rows, time)
                else:
                    self._append(rows, time)
            except Exception:
                first = rows[0][0]
                logger.exception(
                    "could not write %d audit record(s), the first for %s by %s",
                    len(rows),
                    first.action,
                    first.actor,
                )
                raise

    def _append(self, rows: list[tuple[AuditEvent, dict[str, Any]]], time: datetime) -> None:
        """SQLite: the rows in one ``BEGIN IMMEDIATE`` transaction committed without its own fsync.

        With ``synchronous=NORMAL`` in WAL mode the commit is in the log
        (it survives a crash of teleconsult) and reaches the disk with the
        next synchronous commit, at the latest the next instance stored or
        checkpoint; only a power cut before then can lose it. The
        connection goes back to ``FULL`` before anyone else uses it, or is
        discarded.
        """
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            # On the driver's connection: a PRAGMA is no transaction of SQLAlchemy's.
            driver = conn.connection.dbapi_connection
            if sqlite:
                driver.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    if sqlite:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    previous = conn.execute(
                        select(_audit.c.chain_sha256).order_by(_audit.c.pk.desc()).limit(1)
                    ).scalar()
                    chain = previous or _GENESIS
                    for _event, values in rows:
                        chain = _digest(chain, values)
                        conn.execute(_audit.insert().values(**{**values, "time": time}, chain_sha256=chain))
            finally:
                if sqlite:
                    try:
                        driver.execute("PRAGMA synchronous=FULL")
                    except Exception:
                        conn.invalidate()
                        raise

    def _append_postgresql(self, rows: list[tuple[AuditEvent, dict[str, Any]]], time: datetime) -> None:
        """The same rows in one round trip: lock, inserts (chained by the server) and commit.

        The transaction-level advisory lock orders the chain across
        processes; each insert is its own statement, so under READ COMMITTED
        it reads the chain after the lock is held. Each row's digest is
        computed by PostgreSQL from the row before it with ``sha256()``,
        over the same text ``_digest`` hashes, so ``verify`` checks both
        kinds of rows alike. The statements go as one simple-protocol
        message (values bound by psycopg on the client, as its
        ``ClientCursor`` does): every read of patient data writes a row, and
        three round trips were a third of a small WADO-RS request. The
        commit is asynchronous: the row is visible before the data is
        served and survives a crash of teleconsult; only a crash of the
        database server's machine in the next fraction of a second can lose it.
        """
        with reader(self.engine).connect() as conn:
            driver = conn.connection.dbapi_connection
            cursor = psycopg.ClientCursor(driver)  # type: ignore[arg-type]
            inserts = [
                cursor.mogrify(
                    _CHAINED_INSERT_SQL,
                    {**_CHAINED_INSERT_CONSTANTS, **values, "time": time, "canonical": _canonical(values)},
                )
                for _event, values in rows
            ]
            script = ";".join(
                [
                    "BEGIN",
                    "SET LOCAL synchronous_commit TO OFF",
                    "SELECT pg_advisory_xact_lock(7261001)",
                    *inserts,
                    "COMMIT",
                ]
            )
            try:
                cursor.execute(script)
            except psycopg.Error as exc:
                # Raised on the driver's cursor, past SQLAlchemy: wrapped as SQLAlchemy wraps its own
                # (a lost connection invalidated, never pooled again), so that callers and the API's
                # handlers see the OperationalError of an unreachable index (503), not a bare driver error.
                lost = conn.dialect.is_disconnect(exc, driver, cursor)
                if lost:
                    conn.invalidate()
                else:
                    with contextlib.suppress(Exception):
                        cursor.execute("ROLLBACK")
                raise DBAPIError.instance(
                    "audit append",
                    None,
                    exc,
                    psycopg.Error,
                    connection_invalidated=lost,
                    dialect=conn.dialect,
                ) from exc
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    def query(
        self,
        *,
        actor: str | None = None,
        study_instance_uid: str | None = None,
        patient_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        organisations: Collection[str] | None = None,
        dicom_actors: Collection[str] = (),
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Events matching every filter given, newest first.

        ``organisations`` limits the events to those whose actor belongs to
        one of them, plus the DICOM events of the AE titles in
        ``dicom_actors`` (peers of those organisations, whose rows may carry
        no organisation); ``None`` means no limit (the CLI).
        """
        stmt = select(_audit).order_by(_audit.c.pk.desc()).limit(limit).offset(offset)
        for column, value in (
            (_audit.c.actor, actor),
            (_audit.c.study_instance_uid, study_instance_uid),
            (_audit.c.patient_id, patient_id),
            (_audit.c.outcome, None if outcome is None else AuditOutcome(outcome).value),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(_audit.c.time >= _utc(since))
        if until is not None:
            stmt = stmt.where(_audit.c.time <= _utc(until))
        if organisations is not None:
            stmt = stmt.where(_scope_condition(organisations, dicom_actors))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def iter_events(
        self, *, since: datetime | None = None, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every event in chain order, read in batches (an export of years stays small in memory)."""
        last_pk = 0
        while True:
            stmt = select(_audit).where(_audit.c.pk > last_pk).order_by(_audit.c.pk).limit(batch_size)
            if since is not None:
                stmt = stmt.where(_audit.c.time >= _utc(since))
            if until is not None:
                stmt = stmt.where(_audit.c.time <= _utc(until))
            with self.engine.connect() as conn:
                rows = [dict(row) for row in conn.execute(stmt).mappings()]
            yield from rows
            if len(rows) < batch_size:
                return
            last_pk = int(rows[-1]["pk"])

    def head(self) -> tuple[int, str] | None:
        """The newest event's pk and digest.

        The chain cannot show that its newest rows were cut off; writing the
        head down elsewhere (a ticket, another system) from time to time can.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_audit.c.pk, _audit.c.chain_sha256).order_by(_audit.c.pk.desc()).limit(1)
            ).first()
        return None if row is None else (int(row.pk), str(row.chain_sha256))

    def verify(self) -> tuple[bool, int, int | None]:
        """Walk the chain: (intact, rows checked, pk of the first broken row)."""
        previous = _GENESIS
        checked = 0
        with self.engine.connect() as conn:
            for row in conn.execute(select(_audit).order_by(_audit.c.pk)).mappings():
                # PostgreSQL answers in the session's time zone: back to UTC,
                # as the digest was computed.
                time = _utc(row["time"])
                values = {name: row[name] for name in AuditEvent.__dataclass_fields__}
                values["time"] = time.isoformat()
                if _digest(previous, values) != row["chain_sha256"]:
                    return False, checked, int(row["pk"])
                previous = row["chain_sha256"]
                checked += 1
        return True, checked, None


def _scope_condition(organisations: Collection[str], dicom_actors: Collection[str]) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if organisations:
        conditions.append(_audit.c.actor_organisation.in_(sorted(organisations)))
    if dicom_actors:
        conditions.append(
            and_(_audit.c.interface == Interface.DICOM.value, _audit.c.actor.in_(sorted(dicom_actors)))
        )
    return or_(*conditions) if conditions else false()
