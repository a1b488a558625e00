"""The ECG analyser's rows: one per stored ECG instance version, written once.

``insert`` adds a row inside the caller's transaction (the analyser opens
the critical consult in the same one); the unique key (SOP instance,
version) makes a second analysis's insert fail, by this process or
another, so its transaction and consult roll back. ``unanalysed``
pages through ECG instances whose current version has no row, the
analyser's catch-up after it was down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, select

from teleconsult.domain.consults import utc
from teleconsult.storage.tables import EcgMeasurementRow, Instance
from teleconsult.storage.transactions import reading

__all__ = ["EcgMeasurementRecord", "EcgMeasurementStatus", "EcgMeasurementStore", "Unanalysed"]

_rows = EcgMeasurementRow.__table__
_instances = Instance.__table__


class EcgMeasurementStatus(StrEnum):
    ANALYSED = "analysed"
    NOT_ANALYSABLE = "not_analysable"  # the record cannot be measured soundly (reason says why)
    FAILED = "failed"  # the analyser could not read or process it (reason says why)


@dataclass(frozen=True, slots=True)
class EcgMeasurementRecord:
    sop_instance_uid: str
    version: int
    study_instance_uid: str
    series_instance_uid: str
    source_organisation: str
    status: EcgMeasurementStatus
    reason: str | None
    algorithm: str
    measurements: dict[str, Any] | None
    screen: dict[str, Any] | None
    positive: bool
    consult_id: str | None
    note: str | None
    analysed_at: datetime


@dataclass(frozen=True, slots=True)
class Unanalysed:
    pk: int  # the instance row's key: the paging cursor
    sop_instance_uid: str


def _record(row: Any) -> EcgMeasurementRecord:
    return EcgMeasurementRecord(
        sop_instance_uid=row.sop_instance_uid,
        version=row.version,
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        source_organisation=row.source_organisation,
        status=EcgMeasurementStatus(row.status),
        reason=row.reason,
        algorithm=row.algorithm,
        measurements=json.loads(row.measurements) if row.measurements else None,
        screen=json.loads(row.screen) if row.screen else None,
        positive=bool(row.positive),
        consult_id=row.consult_id,
        note=row.note,
        analysed_at=utc(row.analysed_at),
    )


class EcgMeasurementStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def exists(self, conn: Connection, sop_instance_uid: str, version: int) -> bool:
        row = conn.execute(
            select(_rows.c.pk).where(_rows.c.sop_instance_uid == sop_instance_uid, _rows.c.version == version)
        ).first()
        return row is not None

    def insert(self, conn: Connection, record: EcgMeasurementRecord) -> None:
        """Add the row in ``conn``'s transaction.

        Raises ``IntegrityError`` if this version has a row already (another
        process won the race): the caller's transaction, and the consult in
        it, must then roll back.
        """
        values = {
            "sop_instance_uid": record.sop_instance_uid,
            "version": record.version,
            "study_instance_uid": record.study_instance_uid,
            "series_instance_uid": record.series_instance_uid,
            "source_organisation": record.source_organisation,
            "status": record.status.value,
            "reason": record.reason[:1024] if record.reason else None,
            "algorithm": record.algorithm[:128],
            "measurements": json.dumps(record.measurements) if record.measurements is not None else None,
            "screen": json.dumps(record.screen, ensure_ascii=False) if record.screen is not None else None,
            "positive": record.positive,
            "consult_id": record.consult_id,
            "note": record.note[:1024] if record.note else None,
            "analysed_at": record.analysed_at,
        }
        conn.execute(_rows.insert().values(**values))

    def get(self, sop_instance_uid: str, version: int) -> EcgMeasurementRecord | None:
        with reading(self.engine) as conn:
            row = conn.execute(
                select(_rows).where(_rows.c.sop_instance_uid == sop_instance_uid, _rows.c.version == version)
            ).first()
        return _record(row) if row is not None else None

    def of_study(self, study_instance_uid: str) -> list[EcgMeasurementRecord]:
        """Every row of the study's ECG instances, newest analysis first."""
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(_rows)
                .where(_rows.c.study_instance_uid == study_instance_uid)
                .order_by(_rows.c.analysed_at.desc(), _rows.c.pk.desc())
            ).all()
        return [_record(row) for row in rows]

    def unanalysed(
        self,
        sop_class_uids: Iterable[str],
        *,
        after: int = 0,
        limit: int = 100,
        received_since: datetime | None = None,
    ) -> list[Unanalysed]:
        """ECG instances whose current version has no row, in the order they were first indexed.

        ``received_since``: only instances (versions) received at or after it.
        """
        measured = _rows.alias("measured")
        stmt = (
            select(_instances.c.pk, _instances.c.sop_instance_uid)
            .select_from(
                _instances.outerjoin(
                    measured,
                    (measured.c.sop_instance_uid == _instances.c.sop_instance_uid)
                    & (measured.c.version == _instances.c.version),
                )
            )
            .where(
                _instances.c.sop_class_uid.in_(sorted(sop_class_uids)),
                _instances.c.pk > after,
                measured.c.pk.is_(None),
            )
            .order_by(_instances.c.pk)
            .limit(limit)
        )
        if received_since is not None:
            stmt = stmt.where(_instances.c.received_at >= received_since)
        with reading(self.engine) as conn:
            return [Unanalysed(int(row.pk), row.sop_instance_uid) for row in conn.execute(stmt)]
