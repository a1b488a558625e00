"""``teleconsult backup`` / ``restore``: the index and every file it needs, while the server runs.

A backup is a directory:

- ``index.sqlite3`` (SQLite, copied with SQLite's online backup, a
  consistent snapshot while the gateway writes) or ``index.pgdump``
  (PostgreSQL, ``pg_dump --format=custom``, consistent as of its start);
- ``dicom/``: the stored files. Their names are their content's SHA-256,
  so a file already in the backup under its name is the same file: a second
  backup into the same directory copies only what arrived since. Files are
  taken after the index snapshot, so every file the snapshot names is there
  (the store never deletes a file an index row names). With the files in
  S3 (``TELECONSULT_STORAGE_URL``) the objects are downloaded (streamed)
  into the same layout, so a backup holds everything whatever the storage;
- ``secret.key`` when the server made its own (it seals the report signing
  keys: without it, restored reports verify but no one can sign again);
- ``recordings/`` and ``quarantine/`` when present (live-exam recordings,
  device files waiting for someone to look at them);
- ``backup.json``: when, from which schema revision, what it holds.

``restore`` puts a backup into an empty data directory and an empty
database of the same kind, then brings the schema up to this version's.
It refuses a target that already holds an index or files: restoring over
a running store would mix two histories. With S3 storage the files are
uploaded to the configured bucket, each unless an object of its key is
there already (content-addressed: an object there is the same file, and
objects no index row names are harmless), so the bucket need not be empty.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import create_engine, select, text

from teleconsult import __version__
from teleconsult.config import Settings
from teleconsult.errors import NotFoundError, TeleconsultError
from teleconsult.storage.index import normalise_database_url
from teleconsult.storage.protocol import FileStorage, create_file_storage
from teleconsult.storage.tables import Instance, InstanceVersion

__all__ = ["BackupError", "BackupSummary", "backup", "restore"]

MANIFEST = "backup.json"
_SQLITE_DUMP = "index.sqlite3"
_PG_DUMP = "index.pgdump"
_EXTRA_DIRS = ("recordings", "quarantine")
_SECRET = "secret.key"  # noqa: S105 (a file name)


class BackupError(TeleconsultError):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    created_at: str
    teleconsult_version: str
    database: str  # "sqlite" or "postgresql"
    schema_revision: str
    studies: int
    instances: int
    files_indexed: int
    files_copied: int
    files_already_there: int
    bytes_copied: int


def _dialect(url: str) -> str:
    return normalise_database_url(url).split(":", 1)[0].split("+", 1)[0]


def _libpq_url(url: str) -> str:
    """The URL pg_dump and pg_restore understand (no SQLAlchemy driver suffix)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _schema_of(url: str) -> str | None:
    """The schema a ``?options=-csearch_path=...`` URL keeps the index in (else the database's default)."""
    for option in parse_qs(urlsplit(url).query).get("options", []):
        for word in option.split():
            if word.startswith("-csearch_path="):
                return word.split("=", 1)[1].split(",", 1)[0].strip('"') or None
    return None


def _run(command: list[str], what: str) -> None:
    try:
        # the command is pg_dump or pg_restore with the configured URL, never a peer's input
        result = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, check=False, timeout=24 * 3600
        )
    except FileNotFoundError as exc:
        raise BackupError(
            f"{command[0]} is not installed; {what} needs the PostgreSQL client tools (apt install "
            "postgresql-client, of the server's major version)"
        ) from exc
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {result.stderr.strip()[-2000:]}")


def _sqlite_path(url: str) -> Path:
    path = urlsplit(url).path
    return Path(path[1:] if path.startswith("//") else path)


def _copy_file(source: Path, target: Path) -> int:
    """Copy durably (temporary name, fsync, rename); returns the bytes copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with source.open("rb") as src, partial.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(partial, target)
    return target.stat().st_size


def _copy_blocks(blocks: Iterable[bytes], target: Path) -> int:
    """Write ``blocks`` durably to ``target`` (temporary name, fsync, rename); returns the bytes written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    size = 0
    with partial.open("wb") as dst:
        for block in blocks:
            dst.write(block)
            size += len(block)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(partial, target)
    return size


def _file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


def _indexed_files(url: str) -> dict[str, int]:
    """Every file key the index names, with the file's size."""
    engine = create_engine(normalise_database_url(url))
    try:
        with engine.connect() as conn:
            files: dict[str, int] = {}
            for table in (Instance.__table__, InstanceVersion.__table__):
                for key, size in conn.execute(select(table.c.file_key, table.c.size)):
                    files[key] = int(size)
        return files
    finally:
        engine.dispose()


def _open_files(settings: Settings) -> FileStorage:
    files = create_file_storage(settings)
    files.open(sweep=False)  # the server may be running: its temporary files are in use
    return files


def _counts(url: str) -> tuple[str, int, int]:
    """Schema revision, studies and instances of the index at ``url``."""
    engine = create_engine(normalise_database_url(url))
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            studies = conn.execute(text("SELECT count(*) FROM studies")).scalar_one()
            instances = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()
        return str(revision), int(studies), int(instances)
    finally:
        engine.dispose()


def _copy_tree(source: Path, target: Path) -> tuple[int, int, int]:
    """Files of ``source`` missing (or of another size) in ``target``: (copied, already there, bytes)."""
    copied = present = size = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.endswith(".part"):
            continue
        destination = target / path.relative_to(source)
        if destination.is_file() and destination.stat().st_size == path.stat().st_size:
            present += 1
            continue
        size += _copy_file(path, destination)
        copied += 1
    return copied, present, size


def backup(settings: Settings, destination: Path) -> BackupSummary:
    """Write a backup of ``settings``' index and files into ``destination`` (created, or updated)."""
    url = settings.index_url
    dialect = _dialect(url)
    destination.mkdir(parents=True, exist_ok=True)
    if dialect == "sqlite":
        source = _sqlite_path(url)
        if not source.is_file():
            raise BackupError(f"there is no index at {source}: nothing to back up")
        partial = destination / (_SQLITE_DUMP + ".part")
        partial.unlink(missing_ok=True)
        with sqlite3.connect(source) as live, sqlite3.connect(partial) as copy:
            live.backup(copy)
        os.replace(partial, destination / _SQLITE_DUMP)
        snapshot_url = f"sqlite:///{(destination / _SQLITE_DUMP).resolve()}"
    elif dialect == "postgresql":
        partial = destination / (_PG_DUMP + ".part")
        schema = _schema_of(url)
        command = ["pg_dump", "--format=custom", "--no-owner", "--file", str(partial)]
        _run([*command, *(["--schema", schema] if schema else []), _libpq_url(url)], "pg_dump")
        os.replace(partial, destination / _PG_DUMP)
        snapshot_url = url  # the keys are read after the dump: a superset of the dump's
    else:
        raise BackupError(f"backing up a {dialect} index is not supported (SQLite and PostgreSQL are)")
    revision, studies, instances = _counts(snapshot_url)
    indexed = _indexed_files(snapshot_url)
    copied = present = size = 0
    files = _open_files(settings)
    try:
        for key, file_size in sorted(indexed.items()):
            target_file = destination / "dicom" / key
            if target_file.is_file() and target_file.stat().st_size == file_size:
                present += 1
                continue
            try:
                size += _copy_blocks(files.iter_chunks(key), target_file)
            except NotFoundError as exc:
                raise BackupError(
                    f"the index names {key}, which is not in {files.location}: run teleconsult store check"
                ) from exc
            copied += 1
    finally:
        files.close()
    for name in _EXTRA_DIRS:
        if (settings.data_dir / name).is_dir():
            extra = _copy_tree(settings.data_dir / name, destination / name)
            copied, present, size = copied + extra[0], present + extra[1], size + extra[2]
    secret = settings.data_dir / _SECRET
    if secret.is_file():
        _copy_file(secret, destination / _SECRET)
        (destination / _SECRET).chmod(0o600)
    summary = BackupSummary(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        teleconsult_version=__version__,
        database=dialect,
        schema_revision=revision,
        studies=studies,
        instances=instances,
        files_indexed=len(indexed),
        files_copied=copied,
        files_already_there=present,
        bytes_copied=size,
    )
    manifest = destination / (MANIFEST + ".part")
    manifest.write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    os.replace(manifest, destination / MANIFEST)
    return summary


def _upload_tree(settings: Settings, source: Path) -> int:
    """Upload the backup's files to the object storage, skipping keys it holds; returns files uploaded."""
    uploaded = 0
    files = _open_files(settings)
    try:
        for path in sorted(source.rglob("*.dcm")):
            key = path.relative_to(source).as_posix()
            if not files.exists(key):
                files.write(key, _file_blocks(path))
                uploaded += 1
    finally:
        files.close()
    return uploaded


def _read_manifest(source: Path) -> dict[str, object]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BackupError(
            f"{source} holds no {MANIFEST}: not a teleconsult backup, or an unfinished one"
        ) from exc
    if not isinstance(manifest, dict):
        raise BackupError(f"{source / MANIFEST} is not a backup manifest")
    return manifest


def restore(settings: Settings, source: Path) -> dict[str, object]:
    """Restore the backup in ``source`` into ``settings``' (empty) data directory and database."""
    manifest = _read_manifest(source)
    url = settings.index_url
    dialect = _dialect(url)
    if manifest.get("database") != dialect:
        raise BackupError(
            f"the backup holds a {manifest.get('database')} index and the target is {dialect}: restore into "
            f"the same kind of database (TELECONSULT_DATABASE_URL)"
        )
    dicom = settings.data_dir / "dicom"
    local = settings.storage_url is None
    if local and dicom.is_dir() and any(path.is_file() for path in dicom.rglob("*")):
        raise BackupError(f"{dicom} already holds files: restore into an empty data directory")
    if dialect == "sqlite":
        target = _sqlite_path(url)
        if target.exists():
            raise BackupError(f"{target} exists: restore into an empty data directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(source / _SQLITE_DUMP, target)
    else:
        engine = create_engine(normalise_database_url(url))
        try:
            with engine.connect() as conn:
                existing = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar_one()
        finally:
            engine.dispose()
        if existing is not None:
            raise BackupError(
                "the target database already holds a teleconsult index: restore into an empty one"
            )
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--exit-on-error",
                "--dbname",
                _libpq_url(url),
                str(source / _PG_DUMP),
            ],
            "pg_restore",
        )
    if local:
        _copy_tree(source / "dicom", dicom)
    else:
        _upload_tree(settings, source / "dicom")
    for name in _EXTRA_DIRS:
        if (source / name).is_dir():
            _copy_tree(source / name, settings.data_dir / name)
    if (source / _SECRET).is_file() and not (settings.data_dir / _SECRET).exists():
        _copy_file(source / _SECRET, settings.data_dir / _SECRET)
        (settings.data_dir / _SECRET).chmod(0o600)
    return manifest
