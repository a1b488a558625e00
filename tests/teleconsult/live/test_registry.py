"""The registry of live sessions (migration 0014) on SQLite and PostgreSQL: claims, leases, ends."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine

from teleconsult.media.hub import MediaHub
from teleconsult.media.registry import Holder, SessionRegistry
from teleconsult.storage.migrate import upgrade
from teleconsult.storage.tables import Base
from tests.migrations import downgrade

A, B = "http://10.0.0.11:8000", "http://10.0.0.12:8000"


def test_the_migration_creates_the_table_as_declared_and_goes_back(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "live_sessions" in repr(diff)] == []
    downgrade(engine, "0013")
    upgrade(engine)


def test_one_running_session_per_consult_whoever_claims(engine: Engine) -> None:
    upgrade(engine)
    a, b = SessionRegistry(engine, A), SessionRegistry(engine, B + "/")
    assert a.claim("s1", "c1") == Holder("s1", A)
    assert b.claim("s2", "c1") == Holder("s1", A)  # the consult's session is A's
    assert b.claim("s3", "c2") == Holder("s3", B)  # another consult: B's own
    assert (a.running("c1"), b.running("c1")) == (Holder("s1", A), Holder("s1", A))
    assert b.holder("s2") is None  # the losing id was never registered
    a.release("s1")
    assert a.running("c1") is None
    assert b.holder("s1") == Holder("s1", A)  # ended: A still has its state and recording
    assert b.claim("s4", "c1") == Holder("s4", B)
    assert a.replicas_of("c1") == [B]
    assert b.replicas_of("c1") == [A]


def test_a_lapsed_lease_frees_the_consult_and_renewing_keeps_it(engine: Engine) -> None:
    upgrade(engine)
    a = SessionRegistry(engine, A, lease_seconds=0.5)
    b = SessionRegistry(engine, B)
    a.claim("kept", "c-kept")
    a.claim("lapsed", "c-lapsed")
    for _ in range(4):
        time.sleep(0.2)
        assert a.renew(["kept"]) == 1
    assert b.holder("lapsed") is None  # its replica stopped renewing: taken as gone
    assert b.running("c-lapsed") is None
    assert b.claim("taken", "c-lapsed") == Holder("taken", B)
    assert b.claim("refused", "c-kept") == Holder("kept", A)
    assert a.renew(["lapsed"]) == 0  # ended by B's claim: not brought back
    assert b.renew(["kept"]) == 0  # not B's to renew


def test_release_all_ends_only_this_replicas_rows(engine: Engine) -> None:
    upgrade(engine)
    a, b = SessionRegistry(engine, A), SessionRegistry(engine, B)
    a.claim("a1", "c1")
    a.claim("a2", "c2")
    b.claim("b1", "c3")
    assert a.release_all() == 2
    assert (a.running("c1"), a.running("c2"), a.running("c3")) == (None, None, Holder("b1", B))


def test_leases_that_cannot_be_renewed_are_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watchdog renews every 5 s: an index away for a minute must not fill the log."""
    away = create_engine(f"sqlite:///{tmp_path / 'no-such-directory' / 'index.sqlite3'}")
    hub = MediaHub(registry=SessionRegistry(away, A))
    hub._sessions["s1"] = object()  # type: ignore[assignment]  # a running session, as far as renew sees

    async def renew_three_times() -> list[int]:
        return [await hub.renew() for _ in range(3)]

    with caplog.at_level(logging.INFO, logger="teleconsult.media.hub"):
        assert asyncio.run(renew_three_times()) == [0, 0, 0]
    warnings = [r for r in caplog.records if "cannot be renewed" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].exc_info is None
    away.dispose()
