"""The seam between the store and where DICOM files live: a local directory or S3-compatible storage.

``InstanceStore.files`` is a ``FileStorage``. Every reader goes through it
rather than building paths: ``iter_chunks`` streams a file (WADO-RS sends
whole instances from it), ``read`` returns it whole, ``local_path`` gives a
file on this machine for code that needs one (pydicom with deferred values,
frames, rendering, pynetdicom's streamed C-STORE), and ``data_set_sha256``
re-hashes it for ``teleconsult store check`` and storage commitment.

``TELECONSULT_STORAGE_URL`` chooses the backend: unset, ``FileStore`` under
``<data_dir>/dicom``; ``s3://bucket/prefix``, ``S3FileStore`` (imported only
then, so the local default never loads boto3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from teleconsult.storage.files import FileStore

if TYPE_CHECKING:
    from teleconsult.config import Settings

__all__ = ["DEFAULT_BLOCK_SIZE", "FileStorage", "create_file_storage"]

# What streamed reads hand out at a time unless asked otherwise.
DEFAULT_BLOCK_SIZE = 1 << 20


class FileStorage(Protocol):
    """Content-addressed Part 10 files: a key is ``ab/<sha256 of the data set>.dcm``."""

    @property
    def location(self) -> str:
        """Where the files are, for messages (a directory or s3://bucket/prefix)."""
        ...

    @property
    def spool_dir(self) -> Path:
        """A local directory for temporary files (STOW-RS spools uploads there); swept at ``open``."""
        ...

    def open(self, *, sweep: bool = True) -> int:
        """Make the storage ready; with ``sweep``, remove what a crash left. Returns files swept."""
        ...

    def close(self) -> None: ...

    def exists(self, key: str) -> bool: ...

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` durably under ``key``, returning its size; stored once this returns.

        Raises ``StorageFullError`` or ``StorageUnavailableError`` when the
        storage cannot take it (nothing is then stored under ``key``).
        """
        ...

    def read(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str, *, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[bytes]:
        """The file's bytes in blocks of at most ``block_size``, read as they are consumed."""
        ...

    def local_path(self, key: str) -> Path:
        """A local file holding the content of ``key`` (the file itself, or a cached copy)."""
        ...

    def data_set_sha256(self, key: str) -> str:
        """SHA-256 of the data set (the bytes after File Meta) as stored now: the key's own digest."""
        ...

    def unavailable(self) -> str | None:
        """Why files cannot be stored here now (for ``/readyz``), or None when they can."""
        ...


def create_file_storage(settings: Settings) -> FileStorage:
    """The backend ``settings`` select (not opened yet)."""
    if settings.storage_url is None:
        return FileStore(Path(settings.data_dir))
    from teleconsult.storage.s3 import S3FileStore

    return S3FileStore.from_settings(settings)
