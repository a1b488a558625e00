"""DICOM Part 10 files under the data directory, addressed by content.

A file's key is derived from the SHA-256 of its data set (``ab/<digest>.dcm``),
never from a UID or a name a peer sent: nothing a peer writes can steer a path.
A write goes to ``tmp/`` first, is fsynced, renamed into place and its
directory fsynced, so a key that exists always names a complete file. The same
content sent twice is one file.

The 256 fan-out directories are created (and made durable) once, when the
store opens, so no C-STORE pays for a ``mkdir`` and the fsync of its parent.
One level is enough: ext4 and XFS index large directories, and 10 million
instances make about 40,000 files a directory. Keys of the older two-level
layout (``ab/cd/<digest>.dcm``) stay readable: the index keeps every key.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from teleconsult.errors import NotFoundError, StorageFullError

__all__ = ["FileStore", "check_key", "content_key", "raise_if_disk_full"]

logger = logging.getLogger(__name__)

_DICOM_DIR = "dicom"
_KEY = re.compile(r"[0-9a-f]{2}/(?:[0-9a-f]{2}/)?[0-9a-f]{64}\.dcm")
_TMP_DIR = "tmp"


def content_key(sha256_hex: str) -> str:
    return f"{sha256_hex[:2]}/{sha256_hex}.dcm"


def check_key(key: str) -> str:
    """``key`` if the store could have made it (``content_key``, or the older two-level layout)."""
    if _KEY.fullmatch(key) is None:
        raise NotFoundError(f"file key {key!r} is not a key of this store")
    return key


def _blocks(f: io.RawIOBase, block_size: int) -> Iterator[bytes]:
    with f:
        while block := f.read(block_size):
            yield block


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def raise_if_disk_full(exc: OSError, what: str) -> None:
    """Raise ``StorageFullError`` (0xA700 / 507) from ``exc`` when it says the disk or a quota is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFullError(
            f"{what}; free disk space and resend", comment="Out of disk space; resend later"
        ) from exc


class FileStore:
    """Content-addressed files on a local (or mounted) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._dicom = self.root / _DICOM_DIR
        self._tmp = self.root / _TMP_DIR
        self._known_dirs: set[Path] = set()
        # Directory fsyncs run here while the writing thread fsyncs the file.
        self._syncer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dir-fsync")

    def open(self, *, sweep: bool = True) -> int:
        """Create the directories and sweep temporary files a crash left.

        Returns the number of orphaned temporary files removed. A process that
        joins others already writing to this store (a gateway worker) opens
        with ``sweep=False``: their temporary files are in use, not orphaned.
        """
        for path in (self.root, self._dicom, self._tmp):
            path.mkdir(parents=True, exist_ok=True)
        self._make_fan_out()
        if not sweep:
            return 0
        swept = 0
        for leftover in self._tmp.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                swept += 1
        if swept:
            logger.warning("removed %d unfinished temporary files from %s", swept, self._tmp)
        return swept

    def close(self) -> None:
        self._syncer.shutdown(wait=True)

    @property
    def location(self) -> str:
        return str(self._dicom)

    @property
    def spool_dir(self) -> Path:
        return self._tmp

    def path(self, key: str) -> Path:
        # Keys are only ever made by content_key (now or in the older
        # two-level layout); anything else cannot name a file of the store.
        if _KEY.fullmatch(key) is None:
            raise NotFoundError(f"file key {key!r} is not a key of this store")
        return self._dicom / key

    def unavailable(self) -> str | None:
        """Why files cannot be stored here now, or None: the directories exist and can be written."""
        for directory in (self._dicom, self._tmp):
            if not directory.is_dir():
                return f"{directory} does not exist"
            if not os.access(directory, os.W_OK | os.X_OK):
                return f"{directory} cannot be written by this process"
        return None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` durably under ``key``; return the bytes written.

        The file is written under ``tmp/``, renamed into place, and then the
        file and its directory are fsynced at the same time (two device
        flushes in parallel instead of one after the other). The caller
        indexes the file only after this returns, so a crash before both
        flushes finish leaves at most an unindexed file, which the next
        write of the same key detects and replaces: an existing file is
        trusted only if its data set digest matches the key, and is synced
        again, since its writer may still be waiting for its own flushes.
        """
        final = self.path(key)
        directory = final.parent
        if directory not in self._known_dirs:
            self._make_dirs(directory)
        if final.is_file() and self._holds_its_key(key):
            _fsync_path(final)
            _fsync_dir(directory)
            return final.stat().st_size
        temp = self._tmp / f"{uuid.uuid4().hex}.part"
        size = 0
        renamed = False
        try:
            with open(temp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.replace(temp, final)
                renamed = True
                directory_synced = self._syncer.submit(_fsync_dir, directory)
                try:
                    os.fsync(out.fileno())
                finally:
                    directory_synced.result()
        except OSError as exc:
            (final if renamed else temp).unlink(missing_ok=True)
            raise_if_disk_full(exc, f"no space left in {self.root} while storing {key}")
            raise
        return size

    def _holds_its_key(self, key: str) -> bool:
        try:
            return self.data_set_sha256(key) == Path(key).stem
        except (OSError, NotFoundError):
            return False

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"file {key} is not in the store") from exc

    def local_path(self, key: str) -> Path:
        """The file itself: local storage needs no copy."""
        return self.path(key)

    def iter_chunks(self, key: str, *, block_size: int = 1 << 20) -> Iterator[bytes]:
        """The file in ``block_size`` blocks, unbuffered (the blocks are large)."""
        path = self.path(key)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise NotFoundError(f"file {key} is not in the store") from exc
        return _blocks(f, block_size)

    def data_set_sha256(self, key: str) -> str:
        """SHA-256 of the data set in a stored file (the bytes after File Meta).

        This is the digest the key was made from, so comparing the two checks
        a file against silent corruption.
        """
        digest = hashlib.sha256()
        with open(self.path(key), "rb") as f:
            head = f.read(144)
            if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
                raise NotFoundError(f"file {key} is not a DICOM Part 10 file")
            f.seek(144 + int.from_bytes(head[140:144], "little"))
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def _make_fan_out(self) -> None:
        created = False
        for prefix in range(256):
            directory = self._dicom / f"{prefix:02x}"
            try:
                directory.mkdir()
                created = True
            except FileExistsError:
                pass
            self._known_dirs.add(directory)
        if created:
            _fsync_dir(self._dicom)
            _fsync_dir(self.root)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        parent = directory
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory entry is durable only once its parent is fsynced.
        for created in reversed(missing):
            _fsync_dir(created.parent)
        self._known_dirs.add(directory)
