"""DICOM Part 10 files under the data directory, addressed by content.

A file's key is derived from the SHA-256 of its data set (``ab/cd/<digest>.dcm``),
never from a UID or a name a peer sent: nothing a peer writes can steer a path.
A write goes to ``tmp/`` first, is fsynced, renamed into place and its
directory fsynced, so a key that exists always names a complete file. The same
content sent twice is one file.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from teleconsult.errors import NotFoundError, StorageFullError

__all__ = ["FileStore", "content_key"]

logger = logging.getLogger(__name__)

_DICOM_DIR = "dicom"
_TMP_DIR = "tmp"


def content_key(sha256_hex: str) -> str:
    return f"{sha256_hex[:2]}/{sha256_hex[2:4]}/{sha256_hex}.dcm"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """Content-addressed files on a local (or mounted) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._dicom = self.root / _DICOM_DIR
        self._tmp = self.root / _TMP_DIR
        self._known_dirs: set[Path] = set()

    def open(self) -> int:
        """Create the directories and sweep temporary files a crash left.

        Returns the number of orphaned temporary files removed.
        """
        for path in (self.root, self._dicom, self._tmp):
            path.mkdir(parents=True, exist_ok=True)
        swept = 0
        for leftover in self._tmp.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                swept += 1
        if swept:
            logger.warning("removed %d unfinished temporary files from %s", swept, self._tmp)
        return swept

    def path(self, key: str) -> Path:
        path = (self._dicom / key).resolve()
        if self._dicom not in path.parents:
            raise NotFoundError(f"file key {key!r} is outside the store")
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` durably under ``key``; return the bytes written.

        If the key already exists the content is the same (keys are digests),
        so nothing is written again.
        """
        final = self.path(key)
        if final.is_file():
            return final.stat().st_size
        directory = final.parent
        if directory not in self._known_dirs:
            self._make_dirs(directory)
        temp = self._tmp / f"{uuid.uuid4().hex}.part"
        size = 0
        try:
            with open(temp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
            _fsync_dir(directory)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(
                    f"no space left in {self.root} while storing {key}; free disk space and resend",
                    comment="Out of disk space; resend later",
                ) from exc
            raise
        return size

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"file {key} is not in the store") from exc

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
