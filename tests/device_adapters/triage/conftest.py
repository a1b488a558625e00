"""ECG triage fixtures: synthetic ECGs as stored DICOM, a community with county specialists, the analyser.

The community is tests/conftest.py's (COUNTY > TOWN01, TOWN02 > VILLAGE21);
``triage`` is an analyser on the test's store with no thread running, so a
test calls ``analyse``/``scan`` itself and sees the result at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from argon2 import PasswordHasher
from pydicom.dataset import Dataset

import teleconsult.security
from bench.ecg.synthetic import SyntheticEcg, to_csv
from device_adapters.ecg.formats import read_ecg
from device_adapters.ecg.to_dicom import TRANSFER_SYNTAX_UID, build_ecg_waveform, encode
from device_adapters.ecg.triage import EcgTriage
from teleconsult.config import Settings
from teleconsult.consults import ConsultService
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users are made and signed in here: argon2 at its lowest cost (hashes carry their parameters)."""
    monkeypatch.setattr(
        teleconsult.security, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def ecg_dataset(
    ecg: SyntheticEcg,
    *,
    patient_id: str = "T0001",
    birth_date: str = "1960-01-02",
    organisation: str = "TOWN01",
) -> Dataset:
    """The DICOM ECG the importer makes of the record's CSV file (as a cart's file would become)."""
    content = to_csv(ecg, patient_id=patient_id, birth_date=birth_date)
    return build_ecg_waveform(
        read_ecg({"ecg.csv": content}),
        source_sha256=hashlib.sha256(content).hexdigest(),
        organisation=organisation,
        uid_root=None,
        imported_at=datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
    )


def store_ecg(store: InstanceStore, ds: Dataset, organisation: str = "TOWN01") -> Dataset:
    store.store_instance(
        encode(ds), TRANSFER_SYNTAX_UID, calling_ae_title="TOWNUS", source_organisation=organisation
    )
    return ds


@pytest.fixture
def community(store: InstanceStore) -> IdentityStore:
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    return identity


@pytest.fixture
def consults(store: InstanceStore, app_settings: Settings, community: IdentityStore) -> ConsultService:
    return ConsultService(store.index.engine, store.bus, app_settings, community)


@pytest.fixture
def triage(store: InstanceStore, consults: ConsultService, app_settings: Settings) -> Iterator[EcgTriage]:
    analyser = EcgTriage(store, consults, app_settings)
    yield analyser
    analyser.stop()
