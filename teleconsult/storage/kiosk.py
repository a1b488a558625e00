"""Kiosk patients and observations in the index: matched by keyed hash, stored once, read by scope.

``record`` runs one transaction per kiosk message: it finds (or creates) the
patient by the HMAC of the resident ID number, links the patient index
entry whose PatientID is that number within the measuring organisation's
scope, and appends the observations. A message delivered again (MQTT QoS 1
delivers at least once, a kiosk retries a timed-out POST) finds its rows by
(device, time, kind): the same values are answered as duplicates, other
values refused, since rows are never changed. Reads filter by organisation
scope in SQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, select
from sqlalchemy.exc import IntegrityError

from teleconsult.domain.observations import (
    Channel,
    KioskPatient,
    NewObservation,
    Observation,
    ObservationKind,
)
from teleconsult.errors import ConflictError
from teleconsult.storage.tables import KioskObservationRow, KioskPatientRow, Patient
from teleconsult.storage.transactions import reading, writing

__all__ = ["KioskStore", "ProtectedResidentId", "Recorded"]

_patients = KioskPatientRow.__table__
_observations = KioskObservationRow.__table__
_index_patients = Patient.__table__


@dataclass(frozen=True, slots=True)
class ProtectedResidentId:
    """What storage keeps of a resident ID number (it never sees the number except to link)."""

    digest: str  # HMAC-SHA256, hex
    encrypted: str  # Fernet token
    masked: str
    birth_date: date
    sex: str


@dataclass(frozen=True, slots=True)
class Recorded:
    patient: KioskPatient
    patient_created: bool
    observations: list[tuple[Observation, bool]]  # (the row, whether this call stored it)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _patient(row: Row[Any], linked: tuple[str, str] | None) -> KioskPatient:
    return KioskPatient(
        patient_key=row.patient_key,
        resident_id_masked=row.resident_id_masked,
        organisation=row.organisation,
        name=row.name,
        birth_date=date(int(row.birth_date[:4]), int(row.birth_date[4:6]), int(row.birth_date[6:8])),
        sex=row.sex,
        created_at=_aware(row.created_at),
        linked_patient=linked,
    )


def _observation(row: Row[Any], patient_key: str) -> Observation:
    return Observation(
        observation_id=row.observation_id,
        patient_key=patient_key,
        organisation=row.organisation,
        device_id=row.device_id,
        channel=Channel(row.channel),
        kind=ObservationKind(row.kind),
        measured_at=_aware(row.measured_at),
        received_at=_aware(row.received_at),
        values=json.loads(row.result_json),
        unit=row.unit,
        reported=json.loads(row.reported_json),
        alerts=tuple(json.loads(row.alerts_json)),
        context=row.context,
        sop_instance_uid=row.sop_instance_uid,
        study_instance_uid=row.study_instance_uid,
    )


def _canonical(values: object) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class KioskStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing ----------------------------------------------------------------------------

    def record(
        self,
        resident_id: ProtectedResidentId,
        *,
        link_patient_id: str,
        scope: Collection[str],
        name: str | None,
        organisation: str,
        device_id: str,
        channel: Channel,
        measured_at: datetime,
        observations: Sequence[NewObservation],
    ) -> Recorded:
        """Store one message's observations for the patient, in one transaction.

        ``link_patient_id`` is the number itself, used only to look the
        patient index up (PatientID, issuer in ``scope``); it is not stored.

        Raises
        ------
        ConflictError
            An observation of this device, time and kind is stored with other values.
        IndexUnavailableError
            The index cannot be written; nothing was stored.
        """
        measured_at = measured_at.astimezone(UTC)
        for attempt in range(2):
            try:
                with writing(self.engine) as conn:
                    return self._record(
                        conn, resident_id, link_patient_id, scope, name, organisation, device_id, channel,
                        measured_at, observations,
                    )  # fmt: skip
            except IntegrityError:
                # Another writer created the patient (or stored the same message) first; read theirs.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(
        self,
        conn: Connection,
        resident_id: ProtectedResidentId,
        link_patient_id: str,
        scope: Collection[str],
        name: str | None,
        organisation: str,
        device_id: str,
        channel: Channel,
        measured_at: datetime,
        observations: Sequence[NewObservation],
    ) -> Recorded:
        now = datetime.now(UTC)
        index_pk = conn.execute(
            select(_index_patients.c.pk)
            .where(
                _index_patients.c.patient_id == link_patient_id,
                _index_patients.c.issuer_of_patient_id.in_(sorted(scope)),
            )
            .order_by(_index_patients.c.pk)
            .limit(1)
        ).scalar()
        row = conn.execute(
            select(_patients).where(_patients.c.resident_id_hmac == resident_id.digest).with_for_update()
        ).one_or_none()
        created = row is None
        if row is None:
            conn.execute(
                _patients.insert().values(
                    patient_key=uuid.uuid4().hex,
                    resident_id_hmac=resident_id.digest,
                    resident_id_encrypted=resident_id.encrypted,
                    resident_id_masked=resident_id.masked,
                    organisation=organisation,
                    name=name,
                    birth_date=resident_id.birth_date.strftime("%Y%m%d"),
                    sex=resident_id.sex,
                    index_patient_pk=index_pk,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            changes: dict[str, Any] = {}
            if name and name != row.name:
                changes["name"] = name
            if index_pk is not None and row.index_patient_pk is None:
                changes["index_patient_pk"] = index_pk
            if changes:
                conn.execute(
                    _patients.update().where(_patients.c.pk == row.pk).values(updated_at=now, **changes)
                )
        row = conn.execute(select(_patients).where(_patients.c.resident_id_hmac == resident_id.digest)).one()
        stored = [
            self._append(
                conn, row.pk, row.patient_key, organisation, device_id, channel, measured_at, now, new
            )
            for new in observations
        ]
        return Recorded(_patient(row, self._linked(conn, row.index_patient_pk)), created, stored)

    def _append(
        self,
        conn: Connection,
        patient_pk: int,
        patient_key: str,
        organisation: str,
        device_id: str,
        channel: Channel,
        measured_at: datetime,
        now: datetime,
        new: NewObservation,
    ) -> tuple[Observation, bool]:
        result = _canonical(dict(new.values))
        existing = conn.execute(
            select(_observations).where(
                _observations.c.device_id == device_id,
                _observations.c.measured_at == measured_at,
                _observations.c.kind == new.kind.value,
            )
        ).one_or_none()
        if existing is not None:
            if existing.patient_pk != patient_pk or _canonical(json.loads(existing.result_json)) != result:
                raise ConflictError(
                    f"kiosk {device_id} already sent a {new.kind.value} measured at "
                    f"{measured_at.isoformat()} with other values (observation {existing.observation_id}); "
                    "stored measurements are never changed: send a new measurement with its own measured_at"
                )
            return _observation(existing, patient_key), False
        values = {
            "observation_id": str(uuid.uuid4()),
            "patient_pk": patient_pk,
            "organisation": organisation,
            "device_id": device_id,
            "channel": channel.value,
            "kind": new.kind.value,
            "measured_at": measured_at,
            "received_at": now,
            "result_json": result,
            "unit": new.unit,
            "context": new.context,
            "reported_json": _canonical(dict(new.reported)),
            "alerts_json": json.dumps(list(new.alerts), ensure_ascii=False),
            "sop_instance_uid": new.sop_instance_uid,
            "study_instance_uid": new.study_instance_uid,
        }
        conn.execute(_observations.insert().values(**values))
        row = conn.execute(
            select(_observations).where(_observations.c.observation_id == values["observation_id"])
        ).one()
        return _observation(row, patient_key), True

    # -- reading ----------------------------------------------------------------------------

    def _linked(self, conn: Connection, index_pk: int | None) -> tuple[str, str] | None:
        if index_pk is None:
            return None
        found = conn.execute(
            select(_index_patients.c.patient_id, _index_patients.c.issuer_of_patient_id).where(
                _index_patients.c.pk == index_pk
            )
        ).one_or_none()
        return None if found is None else (found.patient_id, found.issuer_of_patient_id)

    def patient(self, patient_key: str, scope: Collection[str]) -> KioskPatient | None:
        """The patient, if one of their observations was made in ``scope``; else None."""
        with reading(self.engine) as conn:
            row = conn.execute(select(_patients).where(_patients.c.patient_key == patient_key)).one_or_none()
            if row is None:
                return None
            seen = conn.execute(
                select(_observations.c.pk)
                .where(_observations.c.patient_pk == row.pk, _observations.c.organisation.in_(sorted(scope)))
                .limit(1)
            ).first()
            if seen is None:
                return None
            return _patient(row, self._linked(conn, row.index_patient_pk))

    def observations_of(
        self, patient_key: str, scope: Collection[str], *, limit: int = 1000
    ) -> list[Observation]:
        """The patient's observations made in ``scope``, newest first."""
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(_observations)
                .join(_patients, _patients.c.pk == _observations.c.patient_pk)
                .where(
                    _patients.c.patient_key == patient_key, _observations.c.organisation.in_(sorted(scope))
                )
                .order_by(_observations.c.measured_at.desc(), _observations.c.pk.desc())
                .limit(limit)
            ).all()
        return [_observation(row, patient_key) for row in rows]

    def observation(
        self, observation_id: str, scope: Collection[str]
    ) -> tuple[Observation, KioskPatient] | None:
        """One observation and its patient, if it was made in ``scope``."""
        with reading(self.engine) as conn:
            row = conn.execute(
                select(_observations, _patients.c.patient_key)
                .join(_patients, _patients.c.pk == _observations.c.patient_pk)
                .where(
                    and_(
                        _observations.c.observation_id == observation_id,
                        _observations.c.organisation.in_(sorted(scope)),
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            patient_row = conn.execute(
                select(_patients).where(_patients.c.patient_key == row.patient_key)
            ).one()
            patient = _patient(patient_row, self._linked(conn, patient_row.index_patient_pk))
        return _observation(row, row.patient_key), patient

    def recent(
        self,
        scope: Collection[str],
        *,
        since: datetime | None = None,
        alerts_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[tuple[Observation, KioskPatient]]:
        """Observations made in ``scope``, newest first, with their patients (a clinic's worklist)."""
        query = (
            select(_observations, _patients.c.patient_key)
            .join(_patients, _patients.c.pk == _observations.c.patient_pk)
            .where(_observations.c.organisation.in_(sorted(scope)))
        )
        if since is not None:
            query = query.where(_observations.c.measured_at >= since.astimezone(UTC))
        if alerts_only:
            query = query.where(_observations.c.alerts_json != "[]")
        query = query.order_by(_observations.c.measured_at.desc(), _observations.c.pk.desc())
        with reading(self.engine) as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
            keys = sorted({row.patient_key for row in rows})
            patients = {
                p.patient_key: _patient(p, self._linked(conn, p.index_patient_pk))
                for p in conn.execute(select(_patients).where(_patients.c.patient_key.in_(keys))).all()
            }
        return [(_observation(row, row.patient_key), patients[row.patient_key]) for row in rows]
