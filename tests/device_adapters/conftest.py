"""Fixtures of the ECG import tests: synthetic signals, dciodvfy, an importer, an inbox on a store."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from device_adapters.ecg.importer import EcgImporter
from device_adapters.ecg.inbox import EcgInbox
from teleconsult.config import Settings
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, require_tool
from tests.device_adapters.writers import synthetic_leads


@pytest.fixture
def leads() -> dict[str, np.ndarray]:
    return synthetic_leads()


def run_dciodvfy(ds: Dataset, folder: Path) -> list[str]:
    """dicom3tools' IOD check: its output lines (errors start with "Error")."""
    tool = require_tool("dciodvfy")
    ds = ds.copy()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return (result.stdout + result.stderr).splitlines()


def errors_of(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("Error")]


def stored_dataset(store: InstanceStore, sop_instance_uid: str) -> Dataset:
    return dcmread(BytesIO(store.read_instance(sop_instance_uid)))


@pytest.fixture
def community(store: InstanceStore) -> IdentityStore:
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    return identity


@pytest.fixture
def importer(app_settings: Settings, store: InstanceStore) -> EcgImporter:
    return EcgImporter(app_settings, store)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_inbox(
    app_settings: Settings, store: InstanceStore, community: IdentityStore, clock: FakeClock
) -> Iterator[Callable[..., EcgInbox]]:
    made: list[EcgInbox] = []

    def _make(**overrides: object) -> EcgInbox:
        values: dict[str, object] = {"ecg_inbox_settle_seconds": 0.0, "ecg_inbox_incomplete_seconds": 60.0}
        values.update(overrides)
        settings = app_settings.model_copy(update=values)
        inbox = EcgInbox(settings, store, clock=clock)
        inbox.root.mkdir(parents=True, exist_ok=True)
        made.append(inbox)
        return inbox

    yield _make
    for inbox in made:
        inbox.stop()
