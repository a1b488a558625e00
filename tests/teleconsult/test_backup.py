"""teleconsult backup / restore: a restored server serves every study again, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, text

from teleconsult import cli
from teleconsult.api.app import create_app
from teleconsult.config import Settings
from teleconsult.security import load_secret_key
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.index import normalise_database_url
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_ecg, make_image

PASSWORD = "correct-horse-battery"
_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def restore_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty index for the restore: a new SQLite file, or a new PostgreSQL database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'index.sqlite3'}"
        return
    name = f"restore_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_database_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(database_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _run(monkeypatch: pytest.MonkeyPatch, settings: Settings, *argv: str) -> int:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", settings.index_url)
    return cli.main(list(argv))


def _study_files(client: TestClient, headers: dict[str, str], study: str) -> set[str]:
    """SHA-256 of each file WADO-RS returns for ``study``."""
    response = client.get(f"/dicomweb/studies/{study}", headers={**headers, "Accept": _ACCEPT})
    assert response.status_code == 200, response.text
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"])
    assert boundary is not None
    digests = set()
    for chunk in response.content.split(f"--{boundary[1]}".encode())[1:-1]:
        _head, _, body = chunk[2:].partition(b"\r\n\r\n")
        digests.add(hashlib.sha256(body[:-2]).hexdigest())
    return digests


def test_a_restored_server_serves_every_study_again(
    store: InstanceStore,
    app_settings: Settings,
    restore_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    identity = IdentityStore(store.index.engine)
    identity.add_organisation("COUNTY", "County Hospital", None)
    identity.add_organisation("TOWN01", "Township 1", "COUNTY")
    identity.add_user("specialist", PASSWORD, "specialist", "COUNTY")
    load_secret_key(app_settings)
    ultrasound = generate_uid()
    data_sets = [
        make_image(
            study_instance_uid=ultrasound, seed=1, charset="GB18030", patient_name="Wang^XiaoMing=王^小明"
        ),
        make_image(study_instance_uid=ultrasound, seed=2),
        make_ecg(),
    ]
    # a re-send with other content: the earlier version must come back too
    replaced = make_image(study_instance_uid=ultrasound, seed=3)
    for ds in [*data_sets, replaced]:
        store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="US", source_organisation="TOWN01"
        )
    replaced.InstitutionName = "Township 1 (corrected)"
    store.store_instance(
        encode(replaced), ExplicitVRLittleEndian, calling_ae_title="US", source_organisation="TOWN01"
    )
    data_sets.append(replaced)
    (app_settings.data_dir / "quarantine").mkdir()
    (app_settings.data_dir / "quarantine" / "cart.scp").write_bytes(b"kept for a person to look at")

    source_app = TestClient(create_app(app_settings, store))
    with source_app as client:
        token = client.post("/api/auth/token", data={"username": "specialist", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        served = {
            study: _study_files(client, headers, study)
            for study in {str(ds.StudyInstanceUID) for ds in data_sets}
        }
    assert sum(len(files) for files in served.values()) == 4

    backup = tmp_path / "backup"
    assert _run(monkeypatch, app_settings, "backup", str(backup)) == 0
    manifest = json.loads((backup / "backup.json").read_text(encoding="utf-8"))
    assert (manifest["studies"], manifest["instances"], manifest["files_indexed"]) == (2, 4, 5)
    assert manifest["files_copied"] == 6  # five DICOM files and the quarantined one
    assert _run(monkeypatch, app_settings, "backup", str(backup)) == 0
    again = json.loads((backup / "backup.json").read_text(encoding="utf-8"))
    assert (again["files_copied"], again["files_already_there"]) == (0, 6), "content-addressed: nothing new"
    assert "6 already there" in capsys.readouterr().out

    target = app_settings.model_copy(update={"data_dir": tmp_path / "restored", "database_url": restore_url})
    assert _run(monkeypatch, target, "restore", str(backup)) == 0
    assert (target.data_dir / "secret.key").read_text() == (app_settings.data_dir / "secret.key").read_text()
    assert (target.data_dir / "quarantine" / "cart.scp").read_bytes() == b"kept for a person to look at"
    restored = InstanceStore(target)
    restored.open()
    try:
        (versions,) = [restored.index.versions(str(replaced.SOPInstanceUID))]
        assert len(versions) == 2
        for row in versions:
            assert restored.files.data_set_sha256(row["file_key"]) == row["sha256"]
        with TestClient(create_app(target, restored)) as client:
            token = client.post("/api/auth/token", data={"username": "specialist", "password": PASSWORD})
            assert token.status_code == 200, "the users came back with the index"
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            for study, files in served.items():
                assert _study_files(client, headers, study) == files
            found = client.get("/dicomweb/studies?PatientName=王*", headers=headers)
            assert [item["00100010"]["Value"][0]["Ideographic"] for item in found.json()] == ["王^小明"]
    finally:
        restored.close()


def test_restore_refuses_a_target_that_is_not_empty(
    store: InstanceStore, app_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.store_instance(
        encode(make_image()), ExplicitVRLittleEndian, calling_ae_title="US", source_organisation="X"
    )
    backup = tmp_path / "backup"
    assert _run(monkeypatch, app_settings, "backup", str(backup)) == 0
    assert _run(monkeypatch, app_settings, "restore", str(backup)) == 1  # onto itself: refused
    assert store.index.counts()["instances"] == 1


def test_restore_of_something_that_is_not_a_backup_says_so(
    app_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "nothing").mkdir()
    assert _run(monkeypatch, app_settings, "restore", str(tmp_path / "nothing")) == 1
    assert "not a teleconsult backup" in capsys.readouterr().err
