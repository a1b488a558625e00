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
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from teleconsult.errors import IndexUnavailableError

__all__ = ["reader", "reading", "writing"]

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
        raise IndexUnavailableError(
            f"the index cannot be written ({type(exc.orig).__name__}); retry later"
        ) from exc


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    try:
        with reader(engine).connect() as conn:
            yield conn
    except OperationalError as exc:
        raise IndexUnavailableError(
            f"the index cannot be read ({type(exc.orig).__name__}); retry later"
        ) from exc
