"""One kiosk message in: checked, the patient matched, the ECG imported, stored, alerts raised.

``KioskIntake.submit`` is shared by the HTTP route and the MQTT subscriber,
so both accept and refuse the same messages. Order matters: everything that
can be checked is checked before anything is written; the ECG (if any) goes
through the ECG importer first (it is idempotent: the same file makes the
same instance), then the observations are stored in one transaction, and
only observations stored by this call raise ``alert.critical``, so a
message delivered twice alerts once. Runs on a worker thread (it hashes,
parses and writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from device_adapters.ecg.errors import EcgImportError
from device_adapters.ecg.importer import EcgImporter, ImportedEcg
from device_adapters.ecg.quarantine import Quarantine
from device_adapters.kiosk.alerts import AlertThresholds
from device_adapters.kiosk.devices import KioskRegistry, RegisteredDevice
from device_adapters.kiosk.errors import KioskDeviceError, KioskMessageError
from device_adapters.kiosk.protection import ResidentIdProtector
from device_adapters.kiosk.schema import KioskMessage, Normalised
from teleconsult.config import Settings
from teleconsult.domain.identity import descendants
from teleconsult.domain.observations import (
    Channel,
    KioskPatient,
    NewObservation,
    Observation,
    ObservationKind,
)
from teleconsult.errors import InvalidInstanceError
from teleconsult.events import Event
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.kiosk import KioskStore, ProtectedResidentId
from teleconsult.storage.store import InstanceStore

__all__ = ["ALERT_EVENT", "IntakeResult", "KioskIntake"]

logger = logging.getLogger(__name__)

ALERT_EVENT = "alert.critical"
# Kiosk clocks drift; a time further ahead than this is a wrong clock, not a measurement.
_FUTURE_TOLERANCE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    device: RegisteredDevice
    patient: KioskPatient
    observations: list[tuple[Observation, bool]]  # (row, stored by this call)
    ecg: ImportedEcg | None
    alert_id: str | None  # the alert.critical event published, if any

    @property
    def stored(self) -> int:
        return sum(1 for _, new in self.observations if new)


class KioskIntake:
    def __init__(
        self,
        settings: Settings,
        store: InstanceStore,
        identity: IdentityStore,
        secret_key: str,
        *,
        registry: KioskRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.identity = identity
        self.registry = registry or KioskRegistry(settings, secret_key)
        self.protector = ResidentIdProtector(secret_key)
        self.thresholds = AlertThresholds.from_settings(settings)
        self.observations = KioskStore(store.index.engine)

    def submit(self, message: KioskMessage, *, device: RegisteredDevice, channel: Channel) -> IntakeResult:
        """Store ``message`` from ``device`` (already authenticated by its channel).

        Raises
        ------
        KioskDeviceError
            The message names another device, or the device's organisation does not exist.
        KioskMessageError
            A value that cannot be stored (measured in the future), or an ECG that cannot be imported.
        EcgTooLargeError, ConflictError, IndexUnavailableError, StorageFullError
        """
        if message.device_id != device.device_id:
            raise KioskDeviceError(
                f"the message names kiosk {message.device_id!r} but was sent by {device.device_id!r}"
            )
        tree = self.identity.organisation_tree()
        if device.organisation not in tree:
            raise KioskDeviceError(
                f"kiosk {device.device_id!r} is registered to organisation {device.organisation!r}, which "
                "does not exist: add it with `teleconsult org add` or correct TELECONSULT_KIOSK_DEVICES"
            )
        measured_at = message.measured_at_utc()
        if measured_at > datetime.now(UTC) + _FUTURE_TOLERANCE:
            raise KioskMessageError(
                "measured_at lies in the future: set the kiosk's clock (and its time zone)",
                [{"field": "measured_at", "message": "in the future"}],
            )
        new = [
            self._new(measurement.normalised(), measurement.model_dump(mode="json"))
            for measurement in message.measurements
        ]
        ecg = self._import_ecg(message, device)
        if ecg is not None:
            stored = ecg.stored
            new.append(
                NewObservation(
                    kind=ObservationKind.ECG,
                    values={"source_format": ecg.source_format.value},
                    unit="",
                    reported={"files": [file.name for file in message.ecg.files]} if message.ecg else {},
                    sop_instance_uid=stored.sop_instance_uid,
                    study_instance_uid=stored.study_instance_uid,
                )
            )
        resident_id = message.resident_id
        recorded = self.observations.record(
            ProtectedResidentId(
                digest=self.protector.digest(resident_id),
                encrypted=self.protector.encrypt(resident_id),
                masked=resident_id.masked,
                birth_date=resident_id.birth_date,
                sex=resident_id.sex,
            ),
            link_patient_id=resident_id.number,
            scope=descendants(device.organisation, tree),
            name=message.name,
            organisation=device.organisation,
            device_id=device.device_id,
            channel=channel,
            measured_at=measured_at,
            observations=new,
        )
        alert_id = self._alert(device, recorded.patient, recorded.observations)
        logger.info(
            "kiosk %s (%s, %s): %d observations stored, %d already stored, patient %s%s",
            device.device_id,
            device.organisation,
            channel.value,
            sum(1 for _, fresh in recorded.observations if fresh),
            sum(1 for _, fresh in recorded.observations if not fresh),
            recorded.patient.patient_key,
            f", alert {alert_id}" if alert_id else "",
        )
        return IntakeResult(device, recorded.patient, recorded.observations, ecg, alert_id)

    def _new(self, normalised: Normalised, reported: dict[str, Any]) -> NewObservation:
        crossings = self.thresholds.crossings(normalised)
        return NewObservation(
            kind=normalised.kind,
            values=normalised.values,
            unit=normalised.unit,
            reported=reported,
            alerts=tuple(crossing.reason for crossing in crossings),
            context=normalised.context,
        )

    def _import_ecg(self, message: KioskMessage, device: RegisteredDevice) -> ImportedEcg | None:
        if message.ecg is None:
            return None
        files = {file.name: file.content() for file in message.ecg.files}
        try:
            return EcgImporter(self.settings, self.store).import_files(
                files, organisation=device.organisation
            )
        except (EcgImportError, InvalidInstanceError) as exc:
            # As a dropped or uploaded file would be: kept with the reason, for someone to act on.
            Quarantine(self.settings.quarantine_dir).keep(
                files,
                reason=exc.message,
                source=f"health kiosk {device.device_id}",
                organisation=device.organisation,
            )
            raise

    def _alert(
        self, device: RegisteredDevice, patient: KioskPatient, observations: list[tuple[Observation, bool]]
    ) -> str | None:
        """Publish ``alert.critical`` for the observations this call stored past a threshold."""
        crossings: list[dict[str, Any]] = []
        reasons: list[str] = []
        ids: list[str] = []
        for observation, fresh in observations:
            if not fresh or not observation.alerts:
                continue
            ids.append(observation.observation_id)
            reasons.extend(observation.alerts)
            for crossing in self.thresholds.crossings(_normalised_of(observation)):
                crossings.append({"observation_id": observation.observation_id, **crossing.as_json()})
        if not ids:
            return None
        event = Event(
            type=ALERT_EVENT,
            data={
                "study_instance_uid": None,
                "source": "kiosk",
                "source_organisation": device.organisation,
                "device_id": device.device_id,
                "kiosk_patient": patient.patient_key,
                "observation_ids": ids,
                "reason": "; ".join(reasons),
                "measurements": crossings,
            },
        )
        self.store.bus.publish(event)
        return event.id


def _normalised_of(observation: Observation) -> Normalised:
    return Normalised(
        kind=observation.kind,
        values=dict(observation.values),
        unit=observation.unit,
        context=observation.context,
    )
