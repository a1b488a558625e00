"""The data directory's filesystem filling up under a running gateway and API, then space freed.

A real filesystem that fills, not an injected error: a small tmpfs is mounted
as the data directory (the tests run as root, as CI does) and a filler file
takes its space. While it is full a C-STORE is answered 0xA700 (out of
resources: the device keeps the instance and sends it again later) and a
STOW-RS request 507 problem+json; nothing is acknowledged, no partial file is
left, the index holds no row for what was refused. Once space is freed the
same processes store again, and the refused instances, sent again, are stored
byte-identical. With the embedded SQLite index on the same filesystem (the
single-machine default), the index survives the full disk intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from teleconsult.api.app import create_app
from teleconsult.audit import AuditLog, AuditOutcome
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, RunningGateway
from tests.factories import encode, make_image, part10
from tests.reliability.one_by_one import c_store, stow

SMALL_FILESYSTEM_BYTES = 16 << 20


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted by the test."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FILESYSTEM_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a small filesystem: {mounted.stderr.strip() or mounted.returncode}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI runs as root and must)")
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


class Filler:
    """Takes every free byte of a filesystem, and gives it back."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"

    def fill(self) -> None:
        block = b"\0" * (64 << 10)
        with open(self.path, "ab", buffering=0) as out:
            for size in (len(block), 4096, 512, 1):
                while True:
                    try:
                        out.write(block[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.path.unlink()


def _images(count: int) -> list[Dataset]:
    """US images of 256 KiB: each needs more than a full filesystem has left."""
    return [make_image(rows=512, columns=512, seed=seed) for seed in range(count)]


def _assert_stored_whole(gateway: RunningGateway, stored: list[Dataset]) -> None:
    for ds in stored:
        record = gateway.store.index.instance(ds.SOPInstanceUID)
        assert record is not None, ds.SOPInstanceUID
        assert record.sha256 == hashlib.sha256(encode(ds)).hexdigest()
        assert gateway.store.files.data_set_sha256(record.file_key) == record.sha256


def _audited_refusals(gateway: RunningGateway) -> list[str]:
    """The details of the STOW-RS requests the audit trail records as failed."""
    rows = AuditLog(gateway.store.index.engine).query(outcome=AuditOutcome.FAILURE)
    stow = ("instance.store", "dicomweb")
    return [str(row["detail"]) for row in rows if (row["action"], row["interface"]) == stow]


def _sign_in(gateway: RunningGateway, client: TestClient) -> str:
    identity = IdentityStore(gateway.store.index.engine)
    identity.add_organisation("COUNTY", "County Hospital")
    identity.add_organisation("TOWN01", "Township 1", "COUNTY")
    identity.add_user("sono1", PASSWORD, "sonographer", "TOWN01")
    signed_in = client.post("/api/auth/token", data={"username": "sono1", "password": PASSWORD})
    return str(signed_in.json()["access_token"])


def test_a_full_data_directory_refuses_cleanly_and_stores_again_once_space_is_freed(
    start: Callable[..., RunningGateway], small_filesystem: Path
) -> None:
    gateway = start(data_dir=small_filesystem / "data")
    filler = Filler(small_filesystem)
    before, during, during_stow = _images(3)
    large_stow = make_image(rows=1500, columns=1500, seed=99)
    with TestClient(create_app(gateway.settings, gateway.store)) as client:
        token = _sign_in(gateway, client)
        assert c_store(gateway, before) == (0x0000, "")

        filler.fill()
        status, comment = c_store(gateway, during)
        assert (status, comment) == (0xA700, "Out of disk space; resend later")
        # One kept in memory while the request is read, one spooled to the disk (over 1 MiB).
        for ds in (during_stow, large_stow):
            refused = stow(client, token, ds)
            assert refused.status_code == 507, refused.text
            assert refused.json()["code"] == "storage-full"
            assert "no space left" in refused.json()["detail"]
            assert gateway.store.index.instance(ds.SOPInstanceUID) is None
        assert gateway.store.index.instance(during.SOPInstanceUID) is None
        assert list((gateway.settings.data_dir / "tmp").iterdir()) == []
        refusals = _audited_refusals(gateway)
        assert len(refusals) == 2, refusals
        assert all("no space left" in detail for detail in refusals), refusals

        filler.free()
        # The same processes, no restart: the device and the browser send again.
        assert c_store(gateway, during) == (0x0000, "")
        for ds in (during_stow, large_stow):
            answer = stow(client, token, ds)
            assert answer.status_code == 200, answer.text
    _assert_stored_whole(gateway, [before, during, during_stow, large_stow])


def test_the_embedded_index_on_a_full_disk_refuses_cleanly_and_stays_sound(
    start: Callable[..., RunningGateway], small_filesystem: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the embedded default: SQLite in the data directory")
    data_dir = small_filesystem / "data"
    gateway = start(data_dir=data_dir, database_url=None)
    index_path = data_dir / "index.sqlite3"
    assert gateway.settings.index_url.endswith(str(index_path))
    filler = Filler(small_filesystem)
    images = _images(13)
    stored = [images[0]]
    with TestClient(create_app(gateway.settings, gateway.store)) as client:
        token = _sign_in(gateway, client)
        assert c_store(gateway, images[0]) == (0x0000, "")

        filler.fill()
        for ds in images[1:5]:
            assert c_store(gateway, ds) == (0xA700, "Out of disk space; resend later")
            assert gateway.store.index.instance(ds.SOPInstanceUID) is None
        # The index's own writes fail too (here the audit row of the request): 507, not 500 or 503.
        refused = stow(client, token, images[5])
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "storage-full"
        filler.free()

        # Room for the file but not for the index's journal: the index refuses, as full, not as down.
        refused_by_the_index = 0
        for extra_pages, ds in enumerate(images[6:], start=1):
            filler.fill()
            os.truncate(filler.path, filler.path.stat().st_size - len(part10(ds)) - extra_pages * 4096)
            status, comment = c_store(gateway, ds)
            filler.free()
            if status == 0x0000:
                stored.append(ds)
                continue
            assert (status, comment) == (0xA700, "Out of disk space; resend later")
            assert gateway.store.index.instance(ds.SOPInstanceUID) is None
            digest = hashlib.sha256(encode(ds)).hexdigest()
            refused_by_the_index += any(data_dir.glob(f"**/{digest}.dcm"))
        assert refused_by_the_index >= 1, "no write reached the index with the disk full"
        assert list((data_dir / "tmp").iterdir()) == []
        with sqlite3.connect(index_path) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

        # No restart: what was refused is sent again and stored.
        for ds in images[1:5] + [ds for ds in images[6:] if ds not in stored]:
            assert c_store(gateway, ds) == (0x0000, "")
            stored.append(ds)
        answer = stow(client, token, images[5])
        assert answer.status_code == 200, answer.text
        stored.append(images[5])
    _assert_stored_whole(gateway, stored)
    with sqlite3.connect(index_path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
