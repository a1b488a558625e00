"""DICOM files in S3-compatible object storage, against moto's server on loopback."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.backup import backup, restore
from teleconsult.cli import main
from teleconsult.config import Settings, bucket_and_prefix
from teleconsult.domain.studies import StoreOutcome
from teleconsult.errors import NotFoundError, StorageUnavailableError
from teleconsult.storage.files import content_key
from teleconsult.storage.s3 import ReadCache, S3FileStore
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image
from tests.s3server import S3Server, aws_environment, running_server

TS = ExplicitVRLittleEndian


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_environment(monkeypatch)


@pytest.fixture
def s3() -> Iterator[S3Server]:
    yield from running_server()


@pytest.fixture
def s3_settings(make_settings, s3: S3Server) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(storage_url=f"s3://{s3.bucket()}/site-a", s3_endpoint_url=s3.url)  # type: ignore[no-any-return]


@pytest.fixture
def s3_store(s3_settings: Settings) -> Iterator[InstanceStore]:
    store = InstanceStore(s3_settings)
    store.open()
    try:
        yield store
    finally:
        store.close()


def _bucket(settings: Settings) -> str:
    assert settings.storage_url is not None
    return bucket_and_prefix(settings.storage_url)[0]


def _object_key(sha256: str) -> str:
    return f"site-a/dicom/{content_key(sha256)}"


def _put(store: InstanceStore, data: bytes) -> Any:
    return store.store_instance(data, TS, calling_ae_title="US1", source_organisation="TOWN01")


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://ab",
        "https://bucket/prefix",
        "s3://Bucket/prefix",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/prefix?versionId=1",
        "s3://user@bucket/prefix",
    ],
)
def test_storage_url_must_be_s3_bucket_and_prefix(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TELECONSULT_STORAGE_URL"):
        Settings(data_dir=tmp_path, storage_url=url)


def test_storage_url_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECONSULT_STORAGE_URL", "s3://county-dicom/teleconsult/prod/")
    monkeypatch.setenv("TELECONSULT_S3_ENDPOINT_URL", "http://minio:9000")
    settings = Settings(data_dir=tmp_path)
    assert bucket_and_prefix(settings.storage_url or "") == ("county-dicom", "teleconsult/prod")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert bucket_and_prefix("s3://county-dicom") == ("county-dicom", "")
    with pytest.raises(ValidationError, match="TELECONSULT_S3_ENDPOINT_URL"):
        Settings(data_dir=tmp_path, s3_endpoint_url="minio:9000")


# -- the write path ---------------------------------------------------------------------


def test_an_instance_is_one_object_under_its_content_key_and_resending_uploads_nothing(
    s3: S3Server, s3_settings: Settings, s3_store: InstanceStore
) -> None:
    client = s3.client()
    bucket = _bucket(s3_settings)
    # With versioning, every PUT would leave a version: one version proves one upload.
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ds = make_image()
    data = encode(ds)

    stored = _put(s3_store, data)

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    body = client.get_object(Bucket=bucket, Key=_object_key(stored.sha256))["Body"].read()
    assert len(body) == stored.size
    assert body[128:132] == b"DICM"
    assert body.endswith(data)
    assert dcmread(io.BytesIO(body)).SOPInstanceUID == ds.SOPInstanceUID
    record = s3_store.index.instance(ds.SOPInstanceUID)
    assert record is not None
    assert record.file_key == content_key(stored.sha256)
    assert s3_store.read_instance(ds.SOPInstanceUID) == body
    assert not (Path(s3_settings.data_dir) / "dicom").exists(), "nothing is written to the local dicom dir"

    again = _put(s3_store, data)

    assert again.outcome is StoreOutcome.DUPLICATE
    versions = client.list_object_versions(Bucket=bucket, Prefix=_object_key(stored.sha256))["Versions"]
    assert len(versions) == 1
    assert s3_store.files.exists(record.file_key)
    assert not s3_store.files.exists(content_key("0" * 64))


def test_a_large_instance_goes_up_as_a_multipart_upload(
    s3: S3Server, s3_settings: Settings, s3_store: InstanceStore
) -> None:
    ds = make_image(rows=4200, columns=4200)  # 17.6 MB: over the 16 MiB multipart threshold
    data = encode(ds)

    stored = _put(s3_store, data)

    head = s3.client().head_object(Bucket=_bucket(s3_settings), Key=_object_key(stored.sha256))
    assert head["ContentLength"] == stored.size
    assert "-" in head["ETag"], "a multipart upload's ETag ends in -<parts>"
    assert head["ContentType"] == "application/dicom"
    assert s3_store.files.data_set_sha256(content_key(stored.sha256)) == stored.sha256
    assert b"".join(s3_store.files.iter_chunks(content_key(stored.sha256))).endswith(data)


def test_reads_stream_cache_and_verify(s3: S3Server, s3_settings: Settings, s3_store: InstanceStore) -> None:
    data = encode(make_image(rows=256, columns=256))
    stored = _put(s3_store, data)
    key = content_key(stored.sha256)
    files = s3_store.files
    whole = files.read(key)

    blocks = list(files.iter_chunks(key, block_size=10_000))
    assert b"".join(blocks) == whole
    assert max(len(block) for block in blocks) == 10_000
    path = files.local_path(key)
    assert path == Path(s3_settings.data_dir).resolve() / "cache" / "s3" / key
    assert path.read_bytes() == whole
    assert files.local_path(key) == path
    assert files.data_set_sha256(key) == stored.sha256
    with pytest.raises(NotFoundError):
        files.read(content_key("1" * 64))
    with pytest.raises(NotFoundError):
        files.local_path("../../etc/passwd")

    # The object changes behind our back: a new download is refused, the check finds it.
    corrupt = bytearray(whole)
    corrupt[-1] ^= 0xFF
    s3.client().put_object(Bucket=_bucket(s3_settings), Key=_object_key(stored.sha256), Body=bytes(corrupt))
    path.unlink()
    with pytest.raises(StorageUnavailableError, match="store check"):
        files.local_path(key)
    assert not path.exists()
    assert files.data_set_sha256(key) != stored.sha256


def test_store_check_and_export_read_the_objects(
    s3: S3Server,
    s3_settings: Settings,
    s3_store: InstanceStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ds = make_image()
    stored = _put(s3_store, encode(ds))
    for name in ("data_dir", "database_url", "storage_url", "s3_endpoint_url"):
        monkeypatch.setenv(f"TELECONSULT_{name.upper()}", str(getattr(s3_settings, name)))

    assert main(["store", "check"]) == 0
    assert "checked 1 files, 0 bad" in capsys.readouterr().out
    assert main(["instance", "export", ds.SOPInstanceUID, str(tmp_path / "x.dcm")]) == 0
    assert (tmp_path / "x.dcm").read_bytes() == s3_store.read_instance(ds.SOPInstanceUID)

    s3.client().put_object(Bucket=_bucket(s3_settings), Key=_object_key(stored.sha256), Body=b"\0" * 200)
    assert main(["store", "check"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


# -- failures ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_storage_refuses_the_instance_and_indexes_nothing(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        storage_url="s3://teleconsult/site-a", s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}"
    )
    store = InstanceStore(settings)
    store.open()  # cannot reach it now: logged, not fatal
    try:
        ds = make_image()
        with pytest.raises(StorageUnavailableError) as refused:
            _put(store, encode(ds))
        assert refused.value.dimse_status == 0xA702
        assert refused.value.http_status == 503
        assert store.index.instance(ds.SOPInstanceUID) is None
    finally:
        store.close()


def test_a_missing_bucket_is_refused_at_open(s3: S3Server, tmp_path: Path) -> None:
    files = S3FileStore("no-such-bucket", "", data_dir=tmp_path, endpoint_url=s3.url)
    with pytest.raises(StorageUnavailableError, match="no-such-bucket"):
        files.open()
    files.close()


# -- the read cache ---------------------------------------------------------------------


def _fill(cache: ReadCache, key: str, size: int) -> Path:
    def download(out: Any) -> int:
        out.write(b"x" * size)
        return size

    return cache.fill(key, download)


def test_read_cache_evicts_the_least_recently_used_beyond_its_size(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path / "cache", 3500, grace_seconds=0)
    cache.open(sweep=True)
    a, b, c, d = (content_key(f"{n:064x}") for n in range(4))
    path_a = _fill(cache, a, 1000)
    path_b = _fill(cache, b, 1000)
    os.utime(path_a, (100, 100))
    os.utime(path_b, (200, 200))
    assert cache.lookup(a) == path_a  # a is now the most recently used of the two

    _fill(cache, c, 1000)
    _fill(cache, d, 1000)  # 4000 bytes: over 3500, evicted down to 90 %

    assert cache.lookup(b) is None
    assert all(cache.lookup(key) is not None for key in (a, c, d))


def test_read_cache_keeps_files_in_use_and_leaves_nothing_of_a_failed_download(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path / "cache", 0, grace_seconds=600)
    cache.open(sweep=True)
    key = content_key("a" * 64)
    assert _fill(cache, key, 100).is_file(), "a file just read is kept, even over the limit"

    def broken(out: Any) -> int:
        out.write(b"partial")
        raise StorageUnavailableError("gone")

    other = content_key("b" * 64)
    with pytest.raises(StorageUnavailableError):
        cache.fill(other, broken)
    assert cache.lookup(other) is None
    assert list((tmp_path / "cache").glob("*.part")) == []


# -- backup and restore -----------------------------------------------------------------


def test_backup_downloads_the_objects_and_restore_uploads_them(s3: S3Server, tmp_path: Path) -> None:
    def settings(name: str, bucket: str) -> Settings:
        return Settings(
            data_dir=tmp_path / name,
            database_url=f"sqlite:///{tmp_path / name / 'index.sqlite3'}",
            storage_url=f"s3://{bucket}/site-a",
            s3_endpoint_url=s3.url,
        )

    source = settings("source", s3.bucket())
    store = InstanceStore(source)
    store.open()
    ds = make_image()
    first = _put(store, encode(ds))
    ds.PatientName = "Li^Ming"
    second = _put(store, encode(ds))
    big = _put(store, encode(make_image(rows=1024, columns=1024)))
    store.close()

    summary = backup(source, tmp_path / "backup")

    assert (summary.files_indexed, summary.files_copied) == (3, 3)
    for stored in (first, second, big):
        copy = tmp_path / "backup" / "dicom" / content_key(stored.sha256)
        assert copy.stat().st_size == stored.size
    assert backup(source, tmp_path / "backup").files_already_there == 3

    target = settings("target", s3.bucket())
    restore(target, tmp_path / "backup")
    restored = InstanceStore(target)
    restored.open()
    try:
        assert restored.read_instance(ds.SOPInstanceUID).endswith(encode(ds))
        assert restored.files.data_set_sha256(content_key(big.sha256)) == big.sha256
        listing = s3.client().list_objects_v2(Bucket=_bucket(target), Prefix="site-a/dicom/")
        assert listing["KeyCount"] == 3
    finally:
        restored.close()


def test_readiness_of_object_storage_follows_the_bucket(
    s3_store: InstanceStore, s3_settings: Settings, s3: S3Server
) -> None:
    assert s3_store.files.unavailable() is None
    s3.client().delete_bucket(Bucket=_bucket(s3_settings))
    reason = s3_store.files.unavailable()
    assert reason is not None
    assert f"bucket {_bucket(s3_settings)!r}" in reason
    assert "cannot be reached" in reason
    s3.stop()
    assert "cannot be reached" in (s3_store.files.unavailable() or "")
