"""DICOM files in S3-compatible object storage (``TELECONSULT_STORAGE_URL=s3://bucket/prefix``).

Each file is one object, ``<prefix>/dicom/<key>``, under the same
content-addressed key as on disk (``ab/<SHA-256 of the data set>.dcm``), so
the index, backups and ``teleconsult store check`` read the same keys.

Durability: ``write`` returns only once S3 has acknowledged the PutObject
(or the CompleteMultipartUpload of a large file), and the store indexes
the instance only after that; a PUT is atomic, so an object that exists is
complete. Before uploading, a HEAD tells whether the object is there with
the right size (the same content re-sent, or a retry after the index
failed): then nothing is uploaded. Checking its digest too would mean
downloading it; ``teleconsult store check`` does that for every object.
Files over 16 MiB go up as multipart uploads (boto3's managed transfer).

Any failure to reach S3 or a refusal (5xx after boto3's retries, 403, a
missing bucket) is ``StorageUnavailableError``: C-STORE answers 0xA702 and
STOW-RS 503, and nothing is indexed.

Reads: ``iter_chunks`` streams an object (WADO-RS sends whole instances so,
never holding one in memory); ``local_path`` downloads into a bounded
read-through cache under ``<data_dir>/cache/s3`` for the readers that need
a file (pydicom with deferred values, frames, rendering, C-GET/C-MOVE,
forwarding). A download is checked against its key's digest before it
enters the cache; the least recently used files are evicted once the cache
is over ``TELECONSULT_S3_CACHE_BYTES``, never one used in the last ten
minutes (a reader may still open it by name).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from teleconsult.config import bucket_and_prefix
from teleconsult.errors import NotFoundError, StorageUnavailableError
from teleconsult.storage.files import check_key

if TYPE_CHECKING:
    from teleconsult.config import Settings

__all__ = ["ReadCache", "S3FileStore"]

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "application/dicom"
# Larger files are uploaded in parts of this size (S3 allows 10,000 parts: 160 GB).
_MULTIPART_BYTES = 16 * 1024 * 1024
_BLOCK = 1 << 20
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_S3_ERRORS = (BotoCoreError, ClientError, Boto3Error)
# A cached file used this recently is never evicted: its reader may open it again by name
# (pydicom's deferred values, the frames of a multipart response).
_GRACE_SECONDS = 600.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{error.get('Code', 'error')} (HTTP {status}) {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND


class _DataSetDigest:
    """SHA-256 of a Part 10 file's data set, fed the file's bytes in blocks (File Meta skipped)."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._head = bytearray()
        self._skip: int | None = None
        self._seen = 0
        self._sha = hashlib.sha256()

    def update(self, block: bytes) -> None:
        if self._skip is None:
            self._head += block
            if len(self._head) < 144:
                return
            head = bytes(self._head)
            self._head = bytearray()
            if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
                raise NotFoundError(f"file {self._key} is not a DICOM Part 10 file")
            self._skip = 144 + int.from_bytes(head[140:144], "little")
            block = head
        start = self._skip - self._seen
        if start < len(block):
            self._sha.update(memoryview(block)[max(start, 0) :])
        self._seen += len(block)

    def hexdigest(self) -> str:
        if self._skip is None:
            raise NotFoundError(f"file {self._key} is not a DICOM Part 10 file")
        return self._sha.hexdigest()


class _ChunkReader(io.RawIOBase):
    """A non-seekable file over byte chunks, for boto3's managed (multipart) upload."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = memoryview(b"")
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        self.size += n
        return n


class ReadCache:
    """Local copies of objects under ``root`` (``<key>`` paths), at most ``max_bytes`` beyond those in use."""

    def __init__(self, root: Path, max_bytes: int, *, grace_seconds: float = _GRACE_SECONDS) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self.grace_seconds = grace_seconds
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Event] = {}
        self._used = 0

    def open(self, *, sweep: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if sweep:
            for leftover in self.root.glob("*.part"):
                leftover.unlink(missing_ok=True)
        with self._lock:
            self._used = sum(size for _path, size, _used in self._entries())

    def lookup(self, key: str) -> Path | None:
        """The cached copy of ``key``, marked as just used; None if there is none."""
        path = self.root / key
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def fill(self, key: str, download: Callable[[BinaryIO], int]) -> Path:
        """The cached copy of ``key``, made with ``download`` (which writes it) unless there is one.

        Threads asking for the same key at once share one download.
        """
        mine = threading.Event()
        while True:
            with self._lock:
                loading = self._loading.setdefault(key, mine)
            if loading is mine:
                break
            loading.wait()
            path = self.lookup(key)
            if path is not None:
                return path
            # that download failed: try again, ourselves
        try:
            final = self.root / key
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = self.root / f"{uuid.uuid4().hex}.part"
            try:
                with open(temp, "xb") as out:
                    size = download(out)
                os.replace(temp, final)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        finally:
            with self._lock:
                del self._loading[key]
            mine.set()
        self._added(size)
        return final

    def _added(self, size: int) -> None:
        with self._lock:
            self._used += size
            if self._used > self.max_bytes:
                self._used = self._evict()

    def _entries(self) -> list[tuple[Path, int, float]]:
        entries = []
        for path in self.root.rglob("*.dcm"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((path, stat.st_size, stat.st_mtime))
        return entries

    def _evict(self) -> int:
        """Remove the least recently used copies down to 90 % of the limit; returns the bytes kept."""
        entries = sorted(self._entries(), key=lambda entry: entry[2])
        total = sum(size for _path, size, _mtime in entries)
        target = self.max_bytes * 9 // 10
        recent = time.time() - self.grace_seconds
        evicted = 0
        for path, size, mtime in entries:
            if total <= target or mtime > recent:
                break
            path.unlink(missing_ok=True)
            total -= size
            evicted += 1
        if total > self.max_bytes:
            logger.warning(
                "the S3 read cache %s holds %d bytes, over its %d-byte limit, in files read in the last %d s",
                self.root,
                total,
                self.max_bytes,
                self.grace_seconds,
            )
        logger.debug("evicted %d files from the S3 read cache %s", evicted, self.root)
        return total


class S3FileStore:
    """Content-addressed files as objects of one bucket, under one prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        data_dir: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        cache_bytes: int = 2 * 1024**3,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must be a bucket name")
        if prefix != prefix.strip("/"):
            raise ValueError(f"prefix {prefix!r} must not start or end with '/'")
        self.bucket = bucket
        self.prefix = prefix
        self._objects = f"{prefix}/dicom/" if prefix else "dicom/"
        self.root = data_dir.resolve()
        self._tmp = self.root / "tmp"
        self.cache = ReadCache(self.root / "cache" / "s3", cache_bytes)
        self._endpoint_url = endpoint_url
        self._region = region  # None: boto3's own defaults (AWS_REGION, AWS_DEFAULT_REGION, us-east-1)
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_BYTES, multipart_chunksize=_MULTIPART_BYTES, max_concurrency=4
        )
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3FileStore:
        if settings.storage_url is None:
            raise ValueError("settings.storage_url is unset: the files are local")
        bucket, prefix = bucket_and_prefix(settings.storage_url)
        return cls(
            bucket,
            prefix,
            data_dir=Path(settings.data_dir),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            cache_bytes=settings.s3_cache_bytes,
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self._objects}"

    @property
    def spool_dir(self) -> Path:
        return self._tmp

    def open(self, *, sweep: bool = True) -> int:
        """Create the local directories, connect, and check that the bucket exists.

        A missing bucket is refused (``StorageUnavailableError``); a service
        that cannot be reached now is only logged: writes fail until it can.
        """
        for path in (self.root, self._tmp):
            path.mkdir(parents=True, exist_ok=True)
        self.cache.open(sweep=sweep)
        swept = 0
        if sweep:
            for leftover in self._tmp.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                    swept += 1
            if swept:
                logger.warning("removed %d unfinished temporary files from %s", swept, self._tmp)
        # Path-style addressing suits MinIO, Ceph and the other non-AWS services.
        s3_options: dict[str, Any] = {"addressing_style": "path"} if self._endpoint_url else {}
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            tcp_keepalive=True,
            s3=s3_options,
        )
        session = boto3.session.Session()
        self._client = session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
        )
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in _NOT_FOUND or code in _NO_BUCKET:
                raise StorageUnavailableError(
                    f"bucket {self.bucket!r} does not exist at {self._endpoint_url or 'AWS S3'}: create "
                    "it, or correct TELECONSULT_STORAGE_URL"
                ) from exc
            logger.warning("cannot check bucket %s: %s", self.bucket, _reason(exc))
        except _S3_ERRORS as exc:
            logger.warning("object storage for %s cannot be reached now: %s", self.location, _reason(exc))
        return swept

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def unavailable(self) -> str | None:
        """Why objects cannot be stored now, or None: the bucket answers (HeadBucket)."""
        if self._client is None:
            return "object storage not opened"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _S3_ERRORS as exc:
            where = self._endpoint_url or "AWS S3"
            return f"bucket {self.bucket!r} at {where} cannot be reached: {_reason(exc)}"
        return None

    def _name(self, key: str) -> str:
        return self._objects + check_key(key)

    def _unavailable(self, action: str, key: str, exc: BaseException) -> StorageUnavailableError:
        return StorageUnavailableError(
            f"object storage {self.location} could not {action} {key}: {_reason(exc)}; check the service, "
            "TELECONSULT_S3_ENDPOINT_URL and the credentials, then retry",
            comment="Object storage unavailable; resend later",
        )

    def _stored_size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            return self._stored_size(key) is not None
        except _S3_ERRORS as exc:
            raise self._unavailable("look up", key, exc) from exc

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Upload ``chunks`` under ``key`` unless an object of that size is there; returns the size.

        Chunks given as a list or tuple (what the store passes) are measured
        first, so an object already stored is not sent again; any other
        iterable is streamed up as it is read.
        """
        name = self._name(key)
        try:
            if not isinstance(chunks, list | tuple):
                reader = _ChunkReader(chunks)
                self._upload(reader, name)
                return reader.size
            size = sum(len(chunk) for chunk in chunks)
            if self._stored_size(key) == size:
                return size
            if size <= _MULTIPART_BYTES:
                self._client.put_object(
                    Bucket=self.bucket, Key=name, Body=b"".join(chunks), ContentType=_CONTENT_TYPE
                )
            else:
                self._upload(_ChunkReader(chunks), name)
        except _S3_ERRORS as exc:
            raise self._unavailable("store", key, exc) from exc
        return size

    def _upload(self, reader: _ChunkReader, name: str) -> None:
        # Buffered, so that read(n) returns n bytes (s3transfer decides on multipart from one read).
        self._client.upload_fileobj(
            io.BufferedReader(reader, _BLOCK),
            self.bucket,
            name,
            ExtraArgs={"ContentType": _CONTENT_TYPE},
            Config=self._transfer,
        )

    def _body(self, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        except ClientError as exc:
            if _is_not_found(exc):
                raise NotFoundError(f"file {key} is not in {self.location}") from exc
            raise self._unavailable("read", key, exc) from exc
        except _S3_ERRORS as exc:
            raise self._unavailable("read", key, exc) from exc

    def _blocks(self, key: str, body: Any, block_size: int) -> Iterator[bytes]:
        try:
            with closing(body):
                yield from body.iter_chunks(block_size)
        except _S3_ERRORS as exc:
            raise self._unavailable("read", key, exc) from exc

    def read(self, key: str) -> bytes:
        cached = self.cache.lookup(check_key(key))
        if cached is not None:
            try:
                return cached.read_bytes()
            except FileNotFoundError:
                pass
        return b"".join(self._blocks(key, self._body(key), _BLOCK))

    def iter_chunks(self, key: str, *, block_size: int = _BLOCK) -> Iterator[bytes]:
        """Blocks of the object, from the cache if it holds a copy, else straight from S3.

        The GET is sent now, so a missing object or an unreachable service
        raises here rather than halfway through a response.
        """
        cached = self.cache.lookup(check_key(key))
        if cached is not None:
            try:
                f = open(cached, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
            except FileNotFoundError:
                pass
            else:
                return _file_blocks(f, block_size)
        return self._blocks(key, self._body(key), block_size)

    def local_path(self, key: str) -> Path:
        cached = self.cache.lookup(check_key(key))
        if cached is not None:
            return cached
        return self.cache.fill(key, lambda out: self._download(key, out))

    def _download(self, key: str, out: BinaryIO) -> int:
        digest = _DataSetDigest(key)
        size = 0
        for block in self._blocks(key, self._body(key), _BLOCK):
            digest.update(block)
            out.write(block)
            size += len(block)
        actual = digest.hexdigest()
        if actual != Path(key).stem:
            logger.error("object %s%s holds a data set of SHA-256 %s: corrupt", self._objects, key, actual)
            raise StorageUnavailableError(
                f"object {key} in {self.location} does not hold the content its key names: run teleconsult "
                "store check",
                comment="Stored object is corrupt",
            )
        return size

    def data_set_sha256(self, key: str) -> str:
        """Digest of the data set of the object in S3 (never of a cached copy), streamed."""
        digest = _DataSetDigest(key)
        for block in self._blocks(key, self._body(key), _BLOCK):
            digest.update(block)
        return digest.hexdigest()


def _file_blocks(f: io.RawIOBase, block_size: int) -> Iterator[bytes]:
    with f:
        while block := f.read(block_size):
            yield block
