"""Outputs of signed reports in the index database: requested, claimed, made or failed.

A row is both the durable request for one signed version's outputs and the
record of what was made for it. It is inserted when the version is signed
(``request``, once per version whatever repeats the request), claimed by one
output worker (``claim``: a status-guarded ``UPDATE``, so two workers or
replicas never make the same row twice), then ``finish``-ed with the UIDs of
the DICOM objects and the PDF, or ``fail``-ed with the reason and the time
of the next attempt. A claim left by a worker that stopped is taken over
once it is older than ``stale_after``.

The row shape follows the forwarding queue (``outbox.py``): claim then
acknowledge, failures visible with ``last_error`` and ``attempts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from teleconsult.domain.consults import utc
from teleconsult.storage.tables import ConsultRow, ReportOutputRow, ReportSignatureRow, ReportVersionRow
from teleconsult.storage.transactions import reading, writing

__all__ = ["MadeOutputs", "OutputRecord", "OutputStatus", "ReportOutputStore", "SignedVersion"]

_outputs = cast(Table, ReportOutputRow.__table__)
_consults = ConsultRow.__table__
_signatures = ReportSignatureRow.__table__
_versions = ReportVersionRow.__table__
_ERROR_LENGTH = 1024


class OutputStatus(StrEnum):
    PENDING = "pending"  # requested, not tried yet
    PRODUCING = "producing"  # claimed by a worker
    DONE = "done"
    FAILED = "failed"  # the last attempt failed; tried again at next_attempt_at


@dataclass(frozen=True, slots=True)
class MadeOutputs:
    """What one attempt made: the PDF, and the DICOM objects stored in the study (None without a study)."""

    pdf: bytes
    pdf_sha256: str
    study_instance_uid: str | None = None
    sr_series_instance_uid: str | None = None
    sr_sop_instance_uid: str | None = None
    pdf_series_instance_uid: str | None = None
    pdf_sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One row as the rest of the code sees it (without the PDF bytes)."""

    pk: int
    consult_id: str
    version: int
    kind: str
    patient_key: str
    status: OutputStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    study_instance_uid: str | None
    sr_series_instance_uid: str | None
    sr_sop_instance_uid: str | None
    pdf_series_instance_uid: str | None
    pdf_sop_instance_uid: str | None
    pdf_sha256: str | None
    created_at: datetime
    produced_at: datetime | None


@dataclass(frozen=True, slots=True)
class SignedVersion:
    """A version signed as reviewing (final report or addendum), as ``unrequested`` finds it."""

    consult_id: str
    version: int
    kind: str


def _optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _record(row: Any) -> OutputRecord:
    return OutputRecord(
        pk=row.pk,
        consult_id=row.consult_id,
        version=row.version,
        kind=row.kind,
        patient_key=row.patient_key,
        status=OutputStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=utc(row.next_attempt_at),
        last_error=row.last_error,
        study_instance_uid=row.study_instance_uid,
        sr_series_instance_uid=row.sr_series_instance_uid,
        sr_sop_instance_uid=row.sr_sop_instance_uid,
        pdf_series_instance_uid=row.pdf_series_instance_uid,
        pdf_sop_instance_uid=row.pdf_sop_instance_uid,
        pdf_sha256=row.pdf_sha256,
        created_at=utc(row.created_at),
        produced_at=_optional_utc(row.produced_at),
    )


def _columns() -> list[Any]:
    return [c for c in _outputs.c if c.name != "pdf"] + [_consults.c.consult_id]


def _joined() -> Any:
    return _outputs.join(_consults, _outputs.c.consult_pk == _consults.c.pk)


class ReportOutputStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- requesting ----------------------------------------------------------------

    def request(self, consult_id: str, version: int, kind: str, patient_key: str, now: datetime) -> bool:
        """Ask for the outputs of one signed version; False if they were asked for already."""
        try:
            with writing(self.engine) as conn:
                consult_pk = conn.execute(
                    select(_consults.c.pk).where(_consults.c.consult_id == consult_id)
                ).scalar()
                if consult_pk is None:
                    return False
                exists = conn.execute(
                    select(_outputs.c.pk).where(
                        _outputs.c.consult_pk == consult_pk, _outputs.c.version == version
                    )
                ).first()
                if exists is not None:
                    return False
                conn.execute(
                    _outputs.insert().values(
                        consult_pk=consult_pk,
                        version=version,
                        kind=kind,
                        patient_key=patient_key,
                        status=OutputStatus.PENDING.value,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
        except IntegrityError:  # another replica asked at the same moment
            return False
        return True

    def unrequested(self, limit: int = 500) -> list[SignedVersion]:
        """Reviewing-signed versions without a row: requests lost to a crash between signing and asking."""
        s, v, o = _signatures.c, _versions.c, _outputs.c
        stmt = (
            select(_consults.c.consult_id, s.version, v.kind)
            .select_from(
                _signatures.join(_consults, s.consult_pk == _consults.c.pk)
                .join(_versions, and_(v.consult_pk == s.consult_pk, v.version == s.version))
                .outerjoin(_outputs, and_(o.consult_pk == s.consult_pk, o.version == s.version))
            )
            .where(s.role == "reviewing", o.pk.is_(None))
            .order_by(s.signed_at)
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return [SignedVersion(row[0], row[1], row[2]) for row in conn.execute(stmt).all()]

    # -- working -------------------------------------------------------------------

    def _due(self, now: datetime, stale_after: timedelta) -> Any:
        o = _outputs.c
        return or_(
            and_(
                o.status.in_([OutputStatus.PENDING.value, OutputStatus.FAILED.value]),
                o.next_attempt_at <= now,
            ),
            and_(o.status == OutputStatus.PRODUCING.value, o.claimed_at < now - stale_after),
        )

    def any_due(self, now: datetime, stale_after: timedelta) -> bool:
        """A cheap read first, so an idle worker does not take SQLite's write lock every poll."""
        with reading(self.engine) as conn:
            found = conn.execute(select(_outputs.c.pk).where(self._due(now, stale_after)).limit(1)).first()
        return found is not None

    def claim(
        self, worker: str, now: datetime, *, stale_after: timedelta, limit: int = 10
    ) -> list[OutputRecord]:
        """Claim due rows (oldest first) for ``worker``; each row goes to one worker only."""
        o = _outputs.c
        wanted = (
            select(o.pk).where(self._due(now, stale_after)).order_by(o.next_attempt_at, o.pk).limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            wanted = wanted.with_for_update(skip_locked=True)
        with writing(self.engine) as conn:
            claimed = conn.execute(
                update(_outputs)
                # The due condition again: the status guard makes the claim exclusive.
                .where(o.pk.in_(wanted), self._due(now, stale_after))
                .values(status=OutputStatus.PRODUCING.value, claimed_by=worker, claimed_at=now)
                .returning(o.pk)
            ).all()
            pks = [row.pk for row in claimed]
            if not pks:
                return []
            rows = conn.execute(select(*_columns()).select_from(_joined()).where(o.pk.in_(pks))).all()
        return sorted((_record(row) for row in rows), key=lambda r: (r.next_attempt_at, r.pk))

    def finish(self, pk: int, worker: str, made: MadeOutputs, now: datetime) -> bool:
        """Record what was made; False if the claim was lost (taken over as stale)."""
        o = _outputs.c
        with writing(self.engine) as conn:
            count = conn.execute(
                update(_outputs)
                .where(o.pk == pk, o.status == OutputStatus.PRODUCING.value, o.claimed_by == worker)
                .values(
                    status=OutputStatus.DONE.value,
                    attempts=o.attempts + 1,
                    last_error=None,
                    produced_at=now,
                    pdf=made.pdf,
                    pdf_sha256=made.pdf_sha256,
                    study_instance_uid=made.study_instance_uid,
                    sr_series_instance_uid=made.sr_series_instance_uid,
                    sr_sop_instance_uid=made.sr_sop_instance_uid,
                    pdf_series_instance_uid=made.pdf_series_instance_uid,
                    pdf_sop_instance_uid=made.pdf_sop_instance_uid,
                )
            ).rowcount
        return bool(count)

    def fail(self, pk: int, worker: str, error: str, next_attempt_at: datetime) -> bool:
        """Record a failed attempt: the reason, and when the next one is due."""
        o = _outputs.c
        with writing(self.engine) as conn:
            count = conn.execute(
                update(_outputs)
                .where(o.pk == pk, o.status == OutputStatus.PRODUCING.value, o.claimed_by == worker)
                .values(
                    status=OutputStatus.FAILED.value,
                    attempts=o.attempts + 1,
                    last_error=error[:_ERROR_LENGTH],
                    next_attempt_at=next_attempt_at,
                )
            ).rowcount
        return bool(count)

    # -- reading -------------------------------------------------------------------

    def of_consult(self, consult_id: str) -> list[OutputRecord]:
        """Every row of a consult, oldest version first."""
        stmt = (
            select(*_columns())
            .select_from(_joined())
            .where(_consults.c.consult_id == consult_id)
            .order_by(_outputs.c.version)
        )
        with reading(self.engine) as conn:
            return [_record(row) for row in conn.execute(stmt).all()]

    def pdf(self, consult_id: str, version: int) -> bytes | None:
        """The PDF made for one version, if it was made."""
        stmt = (
            select(_outputs.c.pdf)
            .select_from(_joined())
            .where(
                _consults.c.consult_id == consult_id,
                _outputs.c.version == version,
                _outputs.c.status == OutputStatus.DONE.value,
            )
        )
        with reading(self.engine) as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else bytes(value)

    def consults_of_patient(self, patient_key: str, limit: int = 1000) -> list[str]:
        """Consults with signed outputs asked for this patient, newest first."""
        stmt = (
            select(_consults.c.consult_id, _outputs.c.created_at)
            .select_from(_joined())
            .where(_outputs.c.patient_key == patient_key)
            .order_by(_outputs.c.created_at.desc(), _outputs.c.pk.desc())
            .limit(limit)
        )
        with reading(self.engine) as conn:
            ids: list[str] = []
            for row in conn.execute(stmt):
                if row.consult_id not in ids:
                    ids.append(row.consult_id)
        return ids
