"""Transactions on the index engine for stores that read, check and then write.

SQLite connections run without pysqlite's implicit transactions (see
``index.py``), so a multi-statement change must open its own: ``BEGIN
IMMEDIATE`` takes the write lock at once, and two writers wait for each
other (busy timeout) instead of one failing when it upgrades a read lock.
On PostgreSQL the caller locks the rows it checks (``SELECT ... FOR UPDATE``).

Reads on PostgreSQL run in autocommit (``reader``): a read in a transaction
costs three round trips to the server (``BEGIN``, the statement, and the
``ROLLBACK`` when the connection returns to the pool), one in autocommit.
Per request that was most of the time a one-row answer spends in the index.
A read of several statements that must see one snapshot opens its own
transaction (``writing``, or ``engine.begin()``).

A write that fails because the index's disk is full (SQLite in the data
directory, or the PostgreSQL server's disk) is told apart from an index that
cannot be reached: the operator has to free space, not restart a server.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from teleconsult.errors import IndexUnavailableError, OutOfResourcesError, StorageFullError

__all__ = ["is_disk_full", "reader", "reading", "write_refused", "writing"]

# PostgreSQL's SQLSTATE disk_full (class 53, insufficient resources).
_PG_DISK_FULL = "53100"

_readers: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def reader(engine: Engine) -> Engine:
    """``engine`` for single-statement reads: autocommit on PostgreSQL (same pool), itself on SQLite."""
    if engine.dialect.name != "postgresql":
        return engine
    found = _readers.get(engine)
    if found is None:
        found = _readers.setdefault(engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
    return found


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One transaction that commits when the block ends and rolls back if it raises."""
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
    except OperationalError as exc:
        raise write_refused(exc, "the index") from exc


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's or the driver's) says its disk is full."""
    orig = getattr(exc, "orig", exc)
    return (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(orig, "sqlstate", None) == _PG_DISK_FULL
    )


def write_refused(exc: OperationalError, index: str) -> OutOfResourcesError:
    """What a failed write of ``index`` raises: its disk is full (A700, 507) or it is down (A701, 503)."""
    if is_disk_full(exc):
        return StorageFullError(
            f"{index} cannot be written: its disk is full; free disk space and resend",
            comment="Out of disk space; resend later",
        )
    return IndexUnavailableError(
        f"{index} cannot be written ({type(exc.orig).__name__}); retry later",
        comment="Index unavailable; resend later",
    )


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    try:
        with reader(engine).connect() as conn:
            yield conn
    except OperationalError as exc:
        raise IndexUnavailableError(
            f"the index cannot be read ({type(exc.orig).__name__}); retry later"
        ) from exc
