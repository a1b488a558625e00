"""Transactions on the index engine for stores that read, check and then write.

SQLite connections run without pysqlite's implicit transactions (see
``index.py``), so a multi-statement change must open its own: ``BEGIN
IMMEDIATE`` takes the write lock at once, and two writers wait for each
other (busy timeout) instead of one failing when it upgrades a read lock.
On PostgreSQL the caller locks the rows it checks (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from teleconsult.errors import IndexUnavailableError

__all__ = ["reading", "writing"]


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One transaction that commits when the block ends and rolls back if it raises."""
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
    except OperationalError as exc:
        raise IndexUnavailableError(
            f"the index cannot be written ({type(exc.orig).__name__}); retry later"
        ) from exc


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    try:
        with engine.connect() as conn:
            yield conn
    except OperationalError as exc:
        raise IndexUnavailableError(
            f"the index cannot be read ({type(exc.orig).__name__}); retry later"
        ) from exc
