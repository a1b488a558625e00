"""The SQL index: patients, studies, series and instances.

One implementation of DICOM matching lives here, shared by C-FIND and
QIDO-RS. Writes are idempotent per SOP Instance UID: the same content is a
no-op, new content becomes a new version and the previous one is kept in
``instance_versions``.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so
that a commit is on disk before a C-STORE is acknowledged; writers in one
process are serialised by a lock because SQLite has one writer anyway.
PostgreSQL writes use ``INSERT ... ON CONFLICT DO NOTHING`` so concurrent
associations storing the same study never fail on a unique key.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Select,
    bindparam,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from teleconsult.domain.instances import InstanceAttributes
from teleconsult.domain.studies import (
    InstanceRecord,
    StoreOutcome,
    StudyQuery,
    StudyRecord,
)
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.matching import build_query
from teleconsult.storage.tables import Instance, InstanceVersion, Patient, Series, Study
from teleconsult.storage.transactions import reader, write_refused

__all__ = [
    "POSTGRESQL_CONNECT_DEFAULTS",
    "Index",
    "IndexResult",
    "IndexedFile",
    "SearchTable",
    "normalise_database_url",
    "postgresql_connect_args",
]

logger = logging.getLogger(__name__)

_patients = Patient.__table__
_studies = Study.__table__
_series = Series.__table__
_instances = Instance.__table__
_versions = InstanceVersion.__table__


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True, slots=True)
class SearchTable:
    """The rows of a search, each a sequence of values named by ``columns``.

    Columns are DICOM keywords, and ``_``-prefixed internal ones such as
    ``_source_organisation``.
    """

    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """Where and what the store wrote for one instance."""

    sha256: str
    file_key: str
    size: int
    calling_ae_title: str
    source_organisation: str


@dataclass(frozen=True, slots=True)
class IndexResult:
    outcome: StoreOutcome
    version: int


# Columns the database fills itself: the key, and the counts its triggers keep (0013).
_NOT_WRITTEN = ("pk", "number_of_series", "number_of_instances")


def _bound(table: Any, *, exclude: tuple[str, ...] = _NOT_WRITTEN) -> dict[str, Any]:
    return {c.name: bindparam(c.name) for c in table.c if c.name not in exclude}


class _Prepared:
    """One ingest statement compiled once for a dialect and run on the driver's own cursor.

    Every new ECG or first image of a study runs five of these; SQLAlchemy's
    execution layer (parameter processing, result set-up) cost about as much
    CPU as SQLite spent running them. The SQL text, the parameter order and
    the type conversions (a DateTime into SQLite's text form) still come
    from SQLAlchemy, once.
    """

    __slots__ = ("names", "processors", "sql")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.names: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def first(self, cursor: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run with ``params``; the first row, or None."""
        if self.processors:
            params = {**params, **{name: convert(params[name]) for name, convert in self.processors.items()}}
        names = self.names
        cursor.execute(self.sql, tuple(params[name] for name in names) if names is not None else params)
        return cursor.fetchone()


class _WriteStatements:
    """The statements of the ingest path, built once.

    Building a statement per call (``insert().values(**row)``) and generating
    its cache key cost more CPU than executing it; these are compiled once
    per connection dialect and then only executed with parameters.
    """

    def __init__(self, insert: Callable[[Any], Any]) -> None:
        self.insert_instance = (
            insert(_instances).values(_bound(_instances)).on_conflict_do_nothing().returning(_instances.c.pk)
        )
        self.lock_instance = (
            select(_instances.c.pk, _instances.c.sha256, _instances.c.version)
            .where(_instances.c.sop_instance_uid == bindparam("sop_instance_uid"))
            .with_for_update()
        )
        self.insert_series = (
            insert(_series).values(_bound(_series)).on_conflict_do_nothing().returning(_series.c.pk)
        )
        self.series_by_uid = select(_series.c.pk, _series.c.study_pk, _series.c.modality).where(
            _series.c.series_instance_uid == bindparam("series_instance_uid")
        )
        self.study_by_uid = select(_studies.c.pk, _studies.c.modalities_in_study).where(
            _studies.c.study_instance_uid == bindparam("study_instance_uid")
        )
        self.study_modalities = select(_studies.c.modalities_in_study).where(_studies.c.pk == bindparam("pk"))
        self.update_study_modalities = (
            update(_studies)
            .where(_studies.c.pk == bindparam("study_pk"))
            .values(modalities_in_study=bindparam("modalities"), updated_at=bindparam("now"))
        )
        # Only a study that has no series yet (made in this transaction) is cleared.
        self.clear_new_study_modalities = (
            update(_studies)
            .where(
                _studies.c.pk == bindparam("study_pk"),
                _studies.c.modalities_in_study == bindparam("modality"),
                ~select(_series.c.pk).where(_series.c.study_pk == _studies.c.pk).exists(),
            )
            .values(modalities_in_study="")
        )
        self.insert_study = (
            insert(_studies).values(_bound(_studies)).on_conflict_do_nothing().returning(_studies.c.pk)
        )
        self.insert_patient = (
            insert(_patients).values(_bound(_patients)).on_conflict_do_nothing().returning(_patients.c.pk)
        )
        self.patient_by_key = select(_patients.c.pk, _patients.c.patient_name).where(
            _patients.c.patient_id == bindparam("patient_id"),
            _patients.c.issuer_of_patient_id == bindparam("issuer_of_patient_id"),
        )
        demographics = (
            "patient_name",
            "patient_name_alphabetic",
            "patient_name_ideographic",
            "patient_name_phonetic",
            "patient_birth_date",
            "patient_sex",
            "specific_character_set",
            "updated_at",
        )
        self.update_patient = (
            update(_patients)
            .where(_patients.c.pk == bindparam("patient_pk"))
            .values({name: bindparam(f"new_{name}") for name in demographics})
        )


# libpq connection parameters that bound how long an unreachable database server can hold a
# request. A server that is down answers at once (connection refused or reset, 0xA701 / 503);
# a host that drops packets (a network cut, a powered-off machine) is not answered at all, and
# without these a new connection waited for the kernel's SYN retries (~2 min) and a query on an
# open one for TCP's retransmission timeout (~15 min), holding the C-STORE (and its device) that
# long. Parameters the URL gives itself (``?connect_timeout=3``) are left as given.
POSTGRESQL_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 10,  # seconds to open a connection
    "tcp_user_timeout": 30_000,  # ms a sent request may stay unacknowledged before the connection is dropped
    "keepalives": 1,  # an idle pooled connection to a vanished host is noticed...
    "keepalives_idle": 30,  # ...after 30 s idle
    "keepalives_interval": 10,  # probed every 10 s
    "keepalives_count": 3,  # and dropped after 3 unanswered probes
}


def postgresql_connect_args(url: str) -> dict[str, int]:
    """``POSTGRESQL_CONNECT_DEFAULTS`` but those the URL's query sets itself."""
    given = set(make_url(url).query)
    return {name: value for name, value in POSTGRESQL_CONNECT_DEFAULTS.items() if name not in given}


def _lock_path_for(database: str | None) -> str | None:
    """A lock file beside a SQLite database, taken around each ingest transaction.

    SQLite lets one writer in at a time and makes the others poll (sleeping
    1, 2, 5, 10 ... ms between tries); gateway worker processes writing the
    same database queue on this lock instead and are woken as soon as it is
    free. In-memory databases belong to one process and need none.
    """
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return f"{database}.write-lock"


class Index:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_database_url(url)
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=8, max_overflow=32, connect_args=postgresql_connect_args(self.url))
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            _ping_when_idle(self.engine)
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._lock_path = _lock_path_for(self.engine.url.database) if self.dialect == "sqlite" else None
        self._process_lock: int | None = None
        self._sql = _WriteStatements(sqlite.insert if self.dialect == "sqlite" else postgresql.insert)
        # The statements every new instance runs, on the driver's cursor.
        dialect = self.engine.dialect
        self._insert_instance = _Prepared(self._sql.insert_instance, dialect)
        self._insert_series = _Prepared(self._sql.insert_series, dialect)
        self._study_by_uid = _Prepared(self._sql.study_by_uid, dialect)
        self._insert_study = _Prepared(self._sql.insert_study, dialect)
        self._insert_patient = _Prepared(self._sql.insert_patient, dialect)
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error
        # series_instance_uid -> (series pk, study pk) of committed rows; rows
        # are never deleted, so a cached pk stays valid across processes.
        self._series_cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._local = threading.local()

    def close(self) -> None:
        self.engine.dispose()
        if self._process_lock is not None:
            os.close(self._process_lock)
            self._process_lock = None

    # -- writing -----------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
            if self._lock_path is not None:
                try:
                    if self._process_lock is None:
                        self._process_lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(self._process_lock, fcntl.LOCK_EX)
                except BaseException:
                    lock.release()
                    raise
        # Series keys found or created in this transaction reach the shared
        # cache only after the commit: another association must never insert
        # against a series row that is not committed (or is rolled back).
        pending: dict[str, tuple[int, int]] = {}
        self._local.pending = pending
        try:
            with self.engine.begin() as conn:
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                # The same DBAPI connection, so the same transaction.
                cursor = self._local.cursor = conn.connection.cursor()
                try:
                    yield conn
                except self._driver_error as exc:
                    # Raised on the driver's cursor, past SQLAlchemy: treated as SQLAlchemy
                    # treats its own statements' errors (a lost server connection is
                    # invalidated, so the pool never hands it out again; the error is wrapped).
                    lost = self.engine.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
                    if lost:
                        conn.invalidate()
                    raise DBAPIError.instance(
                        None,
                        None,
                        exc,
                        self._driver_error,
                        connection_invalidated=lost,
                        dialect=self.engine.dialect,
                    ) from exc
            if pending:
                with self._cache_lock:
                    self._series_cache.update(pending)
                    while len(self._series_cache) > 4096:
                        self._series_cache.popitem(last=False)
        except OperationalError as exc:
            raise write_refused(
                exc, f"the index at {self.engine.url.render_as_string(hide_password=True)}"
            ) from exc
        finally:
            self._local.pending = None
            self._local.cursor = None
            if lock is not None:
                if self._process_lock is not None:
                    fcntl.flock(self._process_lock, fcntl.LOCK_UN)
                lock.release()

    def put_instance(
        self,
        attrs: InstanceAttributes,
        stored: IndexedFile,
        *,
        on_indexed: Callable[[Connection, InstanceAttributes, IndexedFile, IndexResult], None] | None = None,
    ) -> IndexResult:
        """Index one instance whose file is already durable; commit before returning.

        ``on_indexed`` runs inside the same transaction when the instance is
        new or replaced (never for a duplicate), so what it writes (the
        forwarding queue's rows) commits or rolls back with the index row.

        The usual case, a new instance of a known series, is two statements:
        the series key comes from a cache and the instance row is inserted
        with ``ON CONFLICT DO NOTHING RETURNING``; a conflict (a re-send)
        takes the slower path that compares content and keeps versions.
        """
        now = datetime.now(UTC)
        sql = self._sql
        with self._writing() as conn:
            series_pk, _study_pk = self._ensure_series(conn, attrs, stored, now)
            values = {
                "series_pk": series_pk,
                "sop_class_uid": attrs.sop_class_uid,
                "instance_number": attrs.instance_number,
                "number_of_frames": attrs.number_of_frames,
                "transfer_syntax_uid": attrs.transfer_syntax_uid,
                "specific_character_set": attrs.specific_character_set[:128],
                "size": stored.size,
                "sha256": stored.sha256,
                "file_key": stored.file_key,
                "received_at": now,
                "calling_ae_title": stored.calling_ae_title,
                "source_organisation": stored.source_organisation,
            }
            inserted = self._insert_instance.first(
                self._local.cursor, {"sop_instance_uid": attrs.sop_instance_uid, "version": 1, **values}
            )
            if inserted is not None:
                result = IndexResult(StoreOutcome.STORED, 1)
                if on_indexed is not None:
                    on_indexed(conn, attrs, stored, result)
                return result
            current = conn.execute(sql.lock_instance, {"sop_instance_uid": attrs.sop_instance_uid}).one()
            if current.sha256 == stored.sha256:
                return IndexResult(StoreOutcome.DUPLICATE, current.version)
            # New content may correct demographics (a mistyped name re-sent).
            self._ensure_patient(conn, attrs, stored, now)
            previous = conn.execute(select(_instances).where(_instances.c.pk == current.pk)).one()
            conn.execute(
                _versions.insert().values(
                    sop_instance_uid=attrs.sop_instance_uid,
                    version=previous.version,
                    sha256=previous.sha256,
                    file_key=previous.file_key,
                    size=previous.size,
                    transfer_syntax_uid=previous.transfer_syntax_uid,
                    received_at=previous.received_at,
                    calling_ae_title=previous.calling_ae_title,
                    source_organisation=previous.source_organisation,
                    superseded_at=now,
                )
            )
            version = previous.version + 1
            conn.execute(
                update(_instances).where(_instances.c.pk == current.pk).values(version=version, **values)
            )
            logger.info(
                "SOP instance %s re-sent with new content: version %d stored, version %d kept",
                attrs.sop_instance_uid,
                version,
                previous.version,
            )
            result = IndexResult(StoreOutcome.REPLACED, version)
            if on_indexed is not None:
                on_indexed(conn, attrs, stored, result)
            return result

    def _ensure_series(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> tuple[int, int]:
        with self._cache_lock:
            cached = self._series_cache.get(attrs.series_instance_uid)
            if cached is not None:
                self._series_cache.move_to_end(attrs.series_instance_uid)
        if cached is not None:
            return cached
        sql = self._sql
        study_pk, modalities = self._ensure_study(conn, attrs, stored, now)
        inserted = self._insert_series.first(
            self._local.cursor,
            {
                "study_pk": study_pk,
                "series_instance_uid": attrs.series_instance_uid,
                "modality": attrs.modality,
                "series_number": attrs.series_number,
                "series_description": attrs.series_description,
                "series_date": attrs.series_date,
                "series_time": attrs.series_time,
                "body_part_examined": attrs.body_part_examined,
                "source_organisation": stored.source_organisation,
                "created_at": now,
            },
        )
        series_pk = inserted[0] if inserted is not None else None
        modality = attrs.modality
        if series_pk is None:
            # The series exists (another association, or a series UID a
            # device reused): it keeps its study and modality.
            row = conn.execute(sql.series_by_uid, {"series_instance_uid": attrs.series_instance_uid}).one()
            series_pk, modality = row.pk, row.modality
            if row.study_pk != study_pk:
                # A series UID reused across studies: the series stays where
                # it is, and a study made just now for it keeps no modality.
                conn.execute(
                    sql.clear_new_study_modalities, {"study_pk": study_pk, "modality": attrs.modality[:128]}
                )
                study_pk = row.study_pk
                modalities = conn.execute(sql.study_modalities, {"pk": study_pk}).scalar_one()
        if modality and modality not in modalities.split("\\"):
            modalities = "\\".join(sorted(filter(None, [*modalities.split("\\"), modality])))
            changes = {"study_pk": study_pk, "modalities": modalities[:128], "now": now}
            conn.execute(sql.update_study_modalities, changes)
        self._local.pending[attrs.series_instance_uid] = (series_pk, study_pk)
        return series_pk, study_pk

    def _ensure_study(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> tuple[int, str]:
        """(pk, ModalitiesInStudy) of the instance's study, inserted if new."""
        sql = self._sql
        cursor = self._local.cursor
        found = self._study_by_uid.first(cursor, {"study_instance_uid": attrs.study_instance_uid})
        if found is not None:
            return int(found[0]), str(found[1])
        patient_pk = self._ensure_patient(conn, attrs, stored, now)
        inserted = self._insert_study.first(
            cursor,
            {
                "patient_pk": patient_pk,
                "study_instance_uid": attrs.study_instance_uid,
                "study_date": attrs.study_date,
                "study_time": attrs.study_time,
                "accession_number": attrs.accession_number,
                "study_id": attrs.study_id,
                "study_description": attrs.study_description,
                "referring_physician_name": attrs.referring_physician_name,
                "institution_name": attrs.institution_name,
                # The instance's series will be the study's first: its modality
                # goes in now rather than by an UPDATE after the series insert.
                "modalities_in_study": attrs.modality[:128],
                "source_organisation": stored.source_organisation,
                "specific_character_set": attrs.specific_character_set[:128],
                "created_at": now,
                "updated_at": now,
            },
        )
        if inserted is not None:
            return int(inserted[0]), attrs.modality[:128]
        # Inserted by another association since the select above.
        row = conn.execute(sql.study_by_uid, {"study_instance_uid": attrs.study_instance_uid}).one()
        return row.pk, row.modalities_in_study

    def _ensure_patient(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> int:
        sql = self._sql
        demographics = {
            "patient_name": attrs.patient_name,
            "patient_name_alphabetic": attrs.patient_name_alphabetic,
            "patient_name_ideographic": attrs.patient_name_ideographic,
            "patient_name_phonetic": attrs.patient_name_phonetic,
            "patient_birth_date": attrs.patient_birth_date,
            "patient_sex": attrs.patient_sex,
            "specific_character_set": attrs.specific_character_set[:128],
        }
        key = {
            "patient_id": attrs.patient_id,
            "issuer_of_patient_id": attrs.issuer_of_patient_id or stored.source_organisation,
        }
        inserted = self._insert_patient.first(
            self._local.cursor, {**key, **demographics, "created_at": now, "updated_at": now}
        )
        if inserted is not None:
            return int(inserted[0])
        row = conn.execute(sql.patient_by_key, key).one()
        if attrs.patient_name and row.patient_name != attrs.patient_name:
            # The newest study carries the newest demographics (a corrected name).
            changes = {"patient_pk": row.pk, "new_updated_at": now}
            changes.update({f"new_{name}": value for name, value in demographics.items()})
            conn.execute(sql.update_patient, changes)
        return int(row.pk)

    # -- reading -----------------------------------------------------------

    def _read(self) -> Connection:
        try:
            return reader(self.engine).connect()
        except OperationalError as exc:
            raise IndexUnavailableError("the index cannot be reached; retry later") from exc

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        with self._read() as conn:
            row = conn.execute(
                _instance_select().where(_instances.c.sop_instance_uid == sop_instance_uid)
            ).first()
        return _instance_record(row) if row is not None else None

    def locate(self, study: str, series: str | None = None, instance: str | None = None) -> list[Any]:
        """The instances under a study, series or instance path, with what serving them needs.

        Rows with ``study_instance_uid``, ``series_instance_uid``,
        ``sop_instance_uid``, ``sop_class_uid``, ``transfer_syntax_uid``,
        ``number_of_frames``, ``file_key``, ``size``, ``source_organisation``
        and ``patient_id``, in ``query``'s IMAGE order. Every WADO-RS
        request starts here: a statement built once (its cache key
        computed once) costs a quarter of the generic IMAGE-level
        ``build_query``, which is rebuilt and keyed per call.
        """
        statement = _LOCATE[(series is not None, instance is not None)]
        with self._read() as conn:
            return list(conn.execute(statement, {"study": study, "series": series, "instance": instance}))

    def instances_of_study(self, study_instance_uid: str) -> list[InstanceRecord]:
        with self._read() as conn:
            rows = conn.execute(
                _instance_select()
                .where(_studies.c.study_instance_uid == study_instance_uid)
                .order_by(_series.c.series_number, _instances.c.instance_number, _instances.c.pk)
            ).all()
        return [_instance_record(row) for row in rows]

    def versions(self, sop_instance_uid: str) -> list[dict[str, Any]]:
        """Every version of an instance, oldest first, the current one last."""
        with self._read() as conn:
            old = (
                conn.execute(
                    select(_versions)
                    .where(_versions.c.sop_instance_uid == sop_instance_uid)
                    .order_by(_versions.c.version)
                )
                .mappings()
                .all()
            )
            current = (
                conn.execute(select(_instances).where(_instances.c.sop_instance_uid == sop_instance_uid))
                .mappings()
                .first()
            )
        result = [{**row, "current": False} for row in old]
        if current is not None:
            result.append({**current, "current": True})
        return result

    def find_studies(self, query: StudyQuery) -> list[StudyRecord]:
        """Studies matching ``query``, newest first (matching as C-FIND's)."""
        keys = {
            "PatientName": query.patient_name,
            "PatientID": query.patient_id,
            "StudyDate": query.study_date,
            "AccessionNumber": query.accession_number,
            "ModalitiesInStudy": query.modality,
            "StudyDescription": query.study_description,
            "StudyInstanceUID": "\\".join(query.study_instance_uids),
        }
        rows = self.query(
            "STUDY",
            keys,
            return_keys=["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
            organisations=query.source_organisations,
            limit=query.limit,
            offset=query.offset,
        )
        return [
            StudyRecord(
                study_instance_uid=row["StudyInstanceUID"],
                patient_id=row["PatientID"],
                issuer_of_patient_id=row["IssuerOfPatientID"],
                patient_name=row["PatientName"],
                patient_birth_date=row["PatientBirthDate"],
                patient_sex=row["PatientSex"],
                study_date=row["StudyDate"],
                study_time=row["StudyTime"],
                accession_number=row["AccessionNumber"],
                study_description=row["StudyDescription"],
                referring_physician_name=row["ReferringPhysicianName"],
                institution_name=row["InstitutionName"],
                modalities_in_study=tuple(filter(None, row["ModalitiesInStudy"].split("\\"))),
                source_organisation=row["_source_organisation"],
                number_of_series=row["NumberOfStudyRelatedSeries"],
                number_of_instances=row["NumberOfStudyRelatedInstances"],
            )
            for row in rows
        ]

    def query(
        self,
        level: str,
        keys: Mapping[str, str],
        *,
        return_keys: Sequence[str] = (),
        organisations: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Mapping[str, Any]]:
        """Rows of DICOM keyword -> value matching ``keys`` at ``level`` (see matching.py).

        The rows are the driver's read-only mappings, not dicts: a year of
        studies is thousands of rows, and copying each into a dict was a
        tenth of answering such a query.
        """
        table = self.query_table(
            level, keys, return_keys=return_keys, organisations=organisations, limit=limit, offset=offset
        )
        return [row._mapping for row in table.rows]

    def query_table(
        self,
        level: str,
        keys: Mapping[str, str],
        *,
        return_keys: Sequence[str] = (),
        organisations: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> SearchTable:
        """``query`` as column names and rows of values (the driver's rows), for answers of thousands.

        A QIDO-RS answer reads its values a column at a time; a row as a
        mapping cost a fifth of fetching a year of studies.
        """
        stmt = build_query(
            level, keys, return_keys=return_keys, organisations=organisations, limit=limit, offset=offset
        )
        with self._read() as conn:
            result = self._execute_search(conn, stmt, keys)
            return SearchTable(tuple(result.keys()), result.all())

    def _execute_search(
        self, conn: Connection, stmt: Select[Any], keys: Mapping[str, str]
    ) -> CursorResult[Any]:
        if self.dialect != "postgresql" or not _planned_per_value(keys):
            return conn.execute(stmt)
        # psycopg would prepare this statement after a few runs, and
        # PostgreSQL could then keep one plan for every value: a generic
        # plan of a name-prefix search read every patient (70 ms instead
        # of 3 ms at 100,000 instances). Unprepared, each run is planned
        # with its own values. (The rows are all received by the driver
        # when ``execute`` returns.)
        driver = conn.connection.dbapi_connection
        threshold = driver.prepare_threshold  # type: ignore[union-attr]
        driver.prepare_threshold = None  # type: ignore[union-attr]
        try:
            return conn.execute(stmt)
        finally:
            driver.prepare_threshold = threshold  # type: ignore[union-attr]

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (
                    ("patients", _patients),
                    ("studies", _studies),
                    ("series", _series),
                    ("instances", _instances),
                )
            }


def _locate_statement(series: bool, instance: bool) -> Select[Any]:
    stmt = (
        select(
            _studies.c.study_instance_uid,
            _series.c.series_instance_uid,
            _instances.c.sop_instance_uid,
            _instances.c.sop_class_uid,
            _instances.c.transfer_syntax_uid,
            _instances.c.number_of_frames,
            _instances.c.file_key,
            _instances.c.size,
            _studies.c.source_organisation,
            _patients.c.patient_id,
        )
        .select_from(
            _patients.join(_studies, _studies.c.patient_pk == _patients.c.pk)
            .join(_series, _series.c.study_pk == _studies.c.pk)
            .join(_instances, _instances.c.series_pk == _series.c.pk)
        )
        .where(_studies.c.study_instance_uid == bindparam("study"))
        .order_by(_instances.c.instance_number, _instances.c.pk)
    )
    if series:
        stmt = stmt.where(_series.c.series_instance_uid == bindparam("series"))
    if instance:
        stmt = stmt.where(_instances.c.sop_instance_uid == bindparam("instance"))
    return stmt


# (series given, instance given) -> the statement; an instance is always asked for under its series
_LOCATE = {
    (series, instance): _locate_statement(series, instance)
    for series in (False, True)
    for instance in (False, True)
}


def _instance_select() -> Select[Any]:
    return select(
        _instances,
        _series.c.series_instance_uid,
        _studies.c.study_instance_uid,
    ).select_from(
        _instances.join(_series, _instances.c.series_pk == _series.c.pk).join(
            _studies, _series.c.study_pk == _studies.c.pk
        )
    )


def _instance_record(row: Any) -> InstanceRecord:
    received_at = row.received_at
    if received_at.tzinfo is None:  # SQLite returns naive datetimes
        received_at = received_at.replace(tzinfo=UTC)
    return InstanceRecord(
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        series_instance_uid=row.series_instance_uid,
        study_instance_uid=row.study_instance_uid,
        instance_number=row.instance_number,
        number_of_frames=row.number_of_frames,
        transfer_syntax_uid=row.transfer_syntax_uid,
        size=row.size,
        sha256=row.sha256,
        file_key=row.file_key,
        version=row.version,
        received_at=received_at,
        calling_ae_title=row.calling_ae_title,
        source_organisation=row.source_organisation,
    )


# A pooled connection that was in use this recently is taken as alive.
_PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle, not on every checkout.

    ``pool_pre_ping`` costs a round trip to the server per checkout, and a
    request checks out several (principal, query, audit): a tenth of a
    one-row answer's time. A connection used within the last second is
    alive as far as a ping could tell; one idle for longer (after a quiet
    spell, or across a database restart) is pinged, and a dead one is
    replaced by the pool before anyone uses it.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is not None and time.monotonic() - checked_in_at < _PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection is dead")


# Characters of a matching value whose rows depend on the value's shape: a
# wildcard, a range, a list (C-FIND's and QIDO-RS's syntax).
_VALUE_DEPENDENT = frozenset("*?-\\,")


def _planned_per_value(keys: Mapping[str, str]) -> bool:
    """Whether a search is planned well only knowing its values.

    An exact value (a UID, an ID, a date) is served by the same index plan
    whatever it is, so such a search may run as a prepared statement on a
    generic plan and skip planning (a third of a one-row lookup). A wildcard,
    a range or a list is not.
    """
    return any(not _VALUE_DEPENDENT.isdisjoint(value) for value in keys.values() if value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "BEGIN" be ours: pysqlite's implicit transactions
    # would otherwise start them behind our back.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
