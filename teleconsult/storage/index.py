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

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from teleconsult.domain.instances import InstanceAttributes
from teleconsult.domain.studies import (
    InstanceRecord,
    StoreOutcome,
    StudyQuery,
    StudyRecord,
)
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.tables import Instance, InstanceVersion, Patient, Series, Study

__all__ = ["Index", "IndexResult", "IndexedFile", "normalise_database_url", "wildcard_to_like"]

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


def wildcard_to_like(value: str) -> str:
    """A DICOM wildcard value (``*``, ``?``) as a SQL LIKE pattern with ``\\`` escapes."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _match_text(column: Any, value: str) -> ColumnElement[bool]:
    if _has_wildcard(value):
        return column.like(wildcard_to_like(value), escape="\\")
    return column == value  # type: ignore[no-any-return]


def _match_date(column: Any, value: str) -> ColumnElement[bool]:
    if "-" in value:
        low, _, high = value.partition("-")
        conditions = []
        if low:
            conditions.append(column >= low.strip())
        if high:
            conditions.append(column <= high.strip())
        conditions.append(column != "")
        return and_(*conditions)
    return column == value.strip()  # type: ignore[no-any-return]


def _match_person_name(value: str) -> ColumnElement[bool]:
    """A PN query matches any of the three component groups, case-insensitively.

    A query with ``=`` is matched group by group. Devices that send Chinese
    in the first (alphabetic) group are found by a Chinese query too.
    """
    columns = (
        _patients.c.patient_name_alphabetic,
        _patients.c.patient_name_ideographic,
        _patients.c.patient_name_phonetic,
    )
    if "=" in value:
        parts = value.split("=")
        conditions = [
            _match_text(func.upper(column), part.upper())
            for column, part in zip(columns, parts, strict=False)
            if part and part != "*"
        ]
        return and_(*conditions) if conditions else _patients.c.pk.is_not(None)
    pattern = value.upper()
    return or_(*(_match_text(func.upper(column), pattern) for column in columns))


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


class Index:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_database_url(url)
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=8, max_overflow=32, pool_pre_ping=True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        # series_instance_uid -> (series pk, study pk) of committed rows; rows
        # are never deleted, so a cached pk stays valid across processes.
        self._series_cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.begin() as conn:
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        except BaseException as exc:
            # A rolled-back transaction may have cached keys of rows that
            # never committed: forget them all (failures are rare).
            with self._cache_lock:
                self._series_cache.clear()
            if isinstance(exc, OperationalError):
                raise IndexUnavailableError(
                    f"the index at {self.engine.url.render_as_string(hide_password=True)} "
                    f"cannot be written ({type(exc.orig).__name__}); retry later",
                    comment="Index unavailable; resend later",
                ) from exc
            raise
        finally:
            if lock is not None:
                lock.release()

    def put_instance(self, attrs: InstanceAttributes, stored: IndexedFile) -> IndexResult:
        """Index one instance whose file is already durable; commit before returning."""
        now = datetime.now(UTC)
        with self._writing() as conn:
            current = conn.execute(
                select(_instances.c.pk, _instances.c.sha256, _instances.c.version)
                .where(_instances.c.sop_instance_uid == attrs.sop_instance_uid)
                .with_for_update()
            ).first()
            if current is not None and current.sha256 == stored.sha256:
                return IndexResult(StoreOutcome.DUPLICATE, current.version)
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
            if current is None:
                inserted = conn.execute(
                    self._insert(_instances)
                    .values(sop_instance_uid=attrs.sop_instance_uid, version=1, **values)
                    .on_conflict_do_nothing()
                    .returning(_instances.c.pk)
                ).first()
                if inserted is not None:
                    return IndexResult(StoreOutcome.STORED, 1)
                # Another association stored the same SOP instance just now.
                current = conn.execute(
                    select(_instances.c.pk, _instances.c.sha256, _instances.c.version)
                    .where(_instances.c.sop_instance_uid == attrs.sop_instance_uid)
                    .with_for_update()
                ).one()
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
            return IndexResult(StoreOutcome.REPLACED, version)

    def _ensure_series(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> tuple[int, int]:
        with self._cache_lock:
            cached = self._series_cache.get(attrs.series_instance_uid)
            if cached is not None:
                self._series_cache.move_to_end(attrs.series_instance_uid)
        if cached is not None:
            return cached
        study_pk, modalities = self._ensure_study(conn, attrs, stored, now)
        conn.execute(
            self._insert(_series)
            .values(
                study_pk=study_pk,
                series_instance_uid=attrs.series_instance_uid,
                modality=attrs.modality,
                series_number=attrs.series_number,
                series_description=attrs.series_description,
                series_date=attrs.series_date,
                series_time=attrs.series_time,
                body_part_examined=attrs.body_part_examined,
                source_organisation=stored.source_organisation,
                created_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = conn.execute(
            select(_series.c.pk, _series.c.study_pk, _series.c.modality).where(
                _series.c.series_instance_uid == attrs.series_instance_uid
            )
        ).one()
        if row.modality and row.modality not in modalities.split("\\"):
            modalities = "\\".join(sorted(filter(None, [*modalities.split("\\"), row.modality])))
            conn.execute(
                update(_studies)
                .where(_studies.c.pk == row.study_pk)
                .values(modalities_in_study=modalities[:128], updated_at=now)
            )
        with self._cache_lock:
            self._series_cache[attrs.series_instance_uid] = (row.pk, row.study_pk)
            while len(self._series_cache) > 4096:
                self._series_cache.popitem(last=False)
        return row.pk, row.study_pk

    def _ensure_study(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> tuple[int, str]:
        row = conn.execute(
            select(_studies.c.pk, _studies.c.modalities_in_study).where(
                _studies.c.study_instance_uid == attrs.study_instance_uid
            )
        ).first()
        if row is not None:
            return row.pk, row.modalities_in_study
        patient_pk = self._ensure_patient(conn, attrs, stored, now)
        conn.execute(
            self._insert(_studies)
            .values(
                patient_pk=patient_pk,
                study_instance_uid=attrs.study_instance_uid,
                study_date=attrs.study_date,
                study_time=attrs.study_time,
                accession_number=attrs.accession_number,
                study_id=attrs.study_id,
                study_description=attrs.study_description,
                referring_physician_name=attrs.referring_physician_name,
                institution_name=attrs.institution_name,
                modalities_in_study="",
                source_organisation=stored.source_organisation,
                specific_character_set=attrs.specific_character_set[:128],
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = conn.execute(
            select(_studies.c.pk, _studies.c.modalities_in_study).where(
                _studies.c.study_instance_uid == attrs.study_instance_uid
            )
        ).one()
        return row.pk, row.modalities_in_study

    def _ensure_patient(
        self, conn: Connection, attrs: InstanceAttributes, stored: IndexedFile, now: datetime
    ) -> int:
        issuer = attrs.issuer_of_patient_id or stored.source_organisation
        demographics = {
            "patient_name": attrs.patient_name,
            "patient_name_alphabetic": attrs.patient_name_alphabetic,
            "patient_name_ideographic": attrs.patient_name_ideographic,
            "patient_name_phonetic": attrs.patient_name_phonetic,
            "patient_birth_date": attrs.patient_birth_date,
            "patient_sex": attrs.patient_sex,
            "specific_character_set": attrs.specific_character_set[:128],
        }
        key = and_(_patients.c.patient_id == attrs.patient_id, _patients.c.issuer_of_patient_id == issuer)
        row = conn.execute(select(_patients.c.pk, _patients.c.patient_name).where(key)).first()
        if row is None:
            conn.execute(
                self._insert(_patients)
                .values(
                    patient_id=attrs.patient_id,
                    issuer_of_patient_id=issuer,
                    created_at=now,
                    updated_at=now,
                    **demographics,
                )
                .on_conflict_do_nothing()
            )
            return int(conn.execute(select(_patients.c.pk).where(key)).scalar_one())
        if attrs.patient_name and row.patient_name != attrs.patient_name:
            # The newest study carries the newest demographics (a corrected name).
            conn.execute(
                update(_patients).where(_patients.c.pk == row.pk).values(updated_at=now, **demographics)
            )
        return int(row.pk)

    # -- reading -----------------------------------------------------------

    def _read(self) -> Connection:
        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise IndexUnavailableError("the index cannot be reached; retry later") from exc

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        with self._read() as conn:
            row = conn.execute(
                _instance_select().where(_instances.c.sop_instance_uid == sop_instance_uid)
            ).first()
        return _instance_record(row) if row is not None else None

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
        series_count = (
            select(func.count(_series.c.pk)).where(_series.c.study_pk == _studies.c.pk).scalar_subquery()
        )
        instance_count = (
            select(func.count(_instances.c.pk))
            .select_from(_instances.join(_series, _instances.c.series_pk == _series.c.pk))
            .where(_series.c.study_pk == _studies.c.pk)
            .scalar_subquery()
        )
        stmt: Select[Any] = select(
            _studies, _patients, series_count.label("n_series"), instance_count.label("n_instances")
        ).select_from(_studies.join(_patients, _studies.c.patient_pk == _patients.c.pk))
        for condition in _study_conditions(query):
            stmt = stmt.where(condition)
        stmt = stmt.order_by(_studies.c.study_date.desc(), _studies.c.study_time.desc(), _studies.c.pk)
        if query.limit is not None:
            stmt = stmt.limit(query.limit)
        if query.offset:
            stmt = stmt.offset(query.offset)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            StudyRecord(
                study_instance_uid=row["study_instance_uid"],
                patient_id=row["patient_id"],
                issuer_of_patient_id=row["issuer_of_patient_id"],
                patient_name=row["patient_name"],
                patient_birth_date=row["patient_birth_date"],
                patient_sex=row["patient_sex"],
                study_date=row["study_date"],
                study_time=row["study_time"],
                accession_number=row["accession_number"],
                study_description=row["study_description"],
                referring_physician_name=row["referring_physician_name"],
                institution_name=row["institution_name"],
                modalities_in_study=tuple(filter(None, row["modalities_in_study"].split("\\"))),
                source_organisation=row[_studies.c.source_organisation],
                number_of_series=row["n_series"],
                number_of_instances=row["n_instances"],
            )
            for row in rows
        ]

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


def _study_conditions(query: StudyQuery) -> Sequence[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.patient_name and query.patient_name != "*":
        conditions.append(_match_person_name(query.patient_name))
    if query.patient_id and query.patient_id != "*":
        conditions.append(_match_text(_patients.c.patient_id, query.patient_id))
    if query.study_date:
        conditions.append(_match_date(_studies.c.study_date, query.study_date))
    if query.accession_number and query.accession_number != "*":
        conditions.append(_match_text(_studies.c.accession_number, query.accession_number))
    if query.study_description and query.study_description != "*":
        conditions.append(
            _match_text(func.upper(_studies.c.study_description), query.study_description.upper())
        )
    if query.modality and query.modality != "*":
        conditions.append(
            _studies.c.pk.in_(
                select(_series.c.study_pk).where(_match_text(_series.c.modality, query.modality))
            )
        )
    if query.study_instance_uids:
        conditions.append(_studies.c.study_instance_uid.in_(query.study_instance_uids))
    if query.source_organisations is not None:
        conditions.append(_studies.c.source_organisation.in_(query.source_organisations))
    return conditions


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
