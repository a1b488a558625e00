"""The content-addressed file store: layout, keys and durability steps."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from teleconsult.errors import NotFoundError
from teleconsult.storage.files import FileStore, content_key


def test_open_creates_the_whole_fan_out_so_writes_never_make_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileStore(tmp_path)
    files.open()
    fan_out = sorted(p.name for p in (tmp_path / "dicom").iterdir())
    assert fan_out == [f"{i:02x}" for i in range(256)]

    def no_mkdir(*args: object, **kwargs: object) -> None:
        raise AssertionError("a write created a directory")

    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    key = content_key(digest)
    assert key == f"{digest[:2]}/{digest}.dcm"
    assert files.write(key, [b"meta", data]) == 1004
    assert files.read(key) == b"meta" + data


def test_keys_of_the_older_two_level_layout_stay_readable(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    files.open()
    digest = hashlib.sha256(b"old").hexdigest()
    old_key = f"{digest[:2]}/{digest[2:4]}/{digest}.dcm"
    (tmp_path / "dicom" / digest[:2] / digest[2:4]).mkdir()
    (tmp_path / "dicom" / old_key).write_bytes(b"old file")
    assert files.read(old_key) == b"old file"


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "ab/../../x.dcm", "/etc/passwd", "ab/1.2.3.dcm", "AB/" + "0" * 64 + ".dcm", ""],
)
def test_anything_but_a_store_key_is_refused(tmp_path: Path, key: str) -> None:
    files = FileStore(tmp_path)
    files.open()
    with pytest.raises(NotFoundError):
        files.path(key)
    with pytest.raises(NotFoundError):
        files.read(key)


def test_reopening_an_existing_store_keeps_its_files(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    files.open()
    data = b"x" * 10
    key = content_key(hashlib.sha256(data).hexdigest())
    files.write(key, [data])
    FileStore(tmp_path).open()
    assert FileStore(tmp_path).read(key) == data


def test_a_damaged_file_under_a_key_is_replaced_not_trusted(tmp_path: Path) -> None:
    """A crash between rename and fsync can leave a short file under a key: rewriting fixes it."""
    files = FileStore(tmp_path)
    files.open()
    data = os.urandom(5000)
    key = content_key(hashlib.sha256(data).hexdigest())
    meta = b"\x00" * 128 + b"DICM" + bytes.fromhex("02000000554c0400") + (0).to_bytes(4, "little")
    (tmp_path / "dicom" / key).write_bytes(meta + data[:100])  # what a crash left

    assert files.write(key, [meta, data]) == len(meta) + len(data)
    assert files.read(key) == meta + data
    assert files.data_set_sha256(key) == hashlib.sha256(data).hexdigest()
    assert not list((tmp_path / "tmp").iterdir())
    files.close()


def test_an_intact_file_under_a_key_is_kept(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    files.open()
    data = os.urandom(5000)
    key = content_key(hashlib.sha256(data).hexdigest())
    meta = b"\x00" * 128 + b"DICM" + bytes.fromhex("02000000554c0400") + (0).to_bytes(4, "little")
    files.write(key, [meta, data])
    before = (tmp_path / "dicom" / key).stat().st_ino
    assert files.write(key, [meta, data]) == len(meta) + len(data)
    assert (tmp_path / "dicom" / key).stat().st_ino == before, "the same content is not written twice"
    files.close()
