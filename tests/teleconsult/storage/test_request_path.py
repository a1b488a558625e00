"""The cheap request path: autocommit reads, idle-only pings, cached organisation tree, audit commits.

Each of these trades a round trip or an fsync for an assumption; the tests
hold the assumptions: a dead pooled connection is still replaced before
use, the index connection is synchronous again after an audit append, the
tree refreshes when an organisation is added, and reads see committed data.
"""

from __future__ import annotations

import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from teleconsult import audit as audit_module
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.studies import StoreOutcome
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage import identity as identity_module
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.index import _planned_per_value
from teleconsult.storage.matching import Level
from teleconsult.storage.store import InstanceStore
from teleconsult.storage.transactions import reader, reading
from tests.factories import encode, make_image

_EVENT = AuditEvent(
    action="query",
    outcome=AuditOutcome.SUCCESS,
    interface=Interface.DICOMWEB,
    actor="spec1",
    resource="GET /dicomweb/studies",
)


def test_reads_on_postgresql_are_autocommit_and_see_committed_rows(store: InstanceStore) -> None:
    engine = store.index.engine
    identity = IdentityStore(engine)
    identity.add_organisation("COUNTY", "County Hospital")
    with reading(engine) as conn:
        codes = [row.code for row in conn.execute(text("SELECT code FROM organisations"))]
        if engine.dialect.name == "postgresql":
            assert conn.connection.dbapi_connection.autocommit is True
            assert reader(engine) is reader(engine)
        else:
            assert reader(engine) is engine
    assert codes == ["COUNTY"]
    # The autocommit setting is the reader's own: a writing connection is transactional again.
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit is False


def test_a_dead_pooled_connection_is_replaced_after_an_idle_spell(store: InstanceStore) -> None:
    engine = store.index.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    with engine.connect() as conn:
        pooled = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    # The pooled connection's server process goes away, as in a database restart.
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled}).scalar_one()
    admin.dispose()
    time.sleep(1.2)  # longer than the idle time after which a connection is pinged
    assert store.index.counts()["instances"] == 0  # no error: the pool replaced the dead connection
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pooled


def test_an_ingest_on_a_connection_lost_under_it_is_refused_and_the_next_one_is_stored(
    store: InstanceStore,
) -> None:
    """The ingest statements run on the driver's cursor; a lost connection still leaves the pool."""
    engine = store.index.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    first, second = make_image(seed=1), make_image(seed=2)
    store.store_instance(
        encode(first), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="TOWN01"
    )
    with engine.connect() as conn:
        pooled = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled}).scalar_one()
    admin.dispose()
    # Used less than a second ago: handed out without a ping, dead under the first statement.
    with pytest.raises(IndexUnavailableError) as refused:
        store.store_instance(
            encode(second), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="TOWN01"
        )
    assert refused.value.dimse_status == 0xA701
    stored = store.store_instance(
        encode(second), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="TOWN01"
    )
    assert stored.outcome is StoreOutcome.STORED
    assert store.index.counts()["instances"] == 2
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pooled


def test_the_organisation_tree_refreshes_when_an_organisation_is_added(
    store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = IdentityStore(store.index.engine)
    identity.add_organisation("COUNTY", "County Hospital")
    assert identity.organisation_tree() == {"COUNTY": None}
    identity.add_organisation("TOWN01", "Township 1", "COUNTY")
    assert identity.organisation_tree() == {"COUNTY": None, "TOWN01": "COUNTY"}
    # Added by another process (the CLI): seen once the cached tree is older than its limit.
    IdentityStore(store.index.engine).add_organisation("TOWN02", "Township 2", "COUNTY")
    assert "TOWN02" not in identity.organisation_tree()
    monkeypatch.setattr(identity_module, "_TREE_SECONDS", 0.0)
    assert identity.organisation_tree()["TOWN02"] == "COUNTY"


def test_an_audit_append_leaves_the_index_connection_synchronous(store: InstanceStore) -> None:
    engine = store.index.engine
    audit = AuditLog(engine)
    audit.record(_EVENT)
    audit.record_many([_EVENT, _EVENT])
    assert audit.verify()[0] is True
    if engine.dialect.name == "sqlite":
        # Every pooled connection, including the one the audit used: FULL (2).
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2
    else:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_an_audit_append_that_fails_leaves_no_row_and_a_synchronous_connection(
    store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = store.index.engine
    audit = AuditLog(engine)
    audit.record(_EVENT)
    canonical = audit_module._canonical
    calls = []

    def fail_on_second_row(values: dict[str, object]) -> str:
        calls.append(values)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return canonical(values)

    monkeypatch.setattr(audit_module, "_canonical", fail_on_second_row)
    with pytest.raises(RuntimeError, match="disk full"):
        audit.record_many([_EVENT, _EVENT])
    monkeypatch.setattr(audit_module, "_canonical", canonical)
    assert len(audit.query(limit=100)) == 1  # the first row of the failed batch was rolled back
    audit.record(_EVENT)
    assert audit.verify() == (True, 2, None)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2


def test_an_audit_append_on_a_lost_connection_is_an_operational_error_and_the_next_one_works(
    store: InstanceStore,
) -> None:
    """The API answers SQLAlchemy's OperationalError with 503; a bare driver error was a 500."""
    engine = store.index.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("a server connection to lose: PostgreSQL only")
    audit = AuditLog(engine)
    audit.record(_EVENT)
    engine.pool.dispose()
    with engine.connect() as conn:  # now the only pooled connection: the next append takes it
        backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    admin = create_engine(engine.url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")
    finally:
        admin.dispose()
    with pytest.raises(OperationalError):
        audit.record(_EVENT)
    audit.record(_EVENT)  # the lost connection was not pooled again
    assert audit.verify() == (True, 2, None)


def test_postgresql_prepares_exact_lookups_and_plans_patterns_with_their_values(store: InstanceStore) -> None:
    """A name-prefix or range search is never a prepared statement (whose generic plan fits no
    prefix); an exact lookup becomes one and stops being planned on every run."""
    engine = store.index.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    exact = {"StudyInstanceUID": "1.2.3.4"}
    for value in ("WANG*", "LI*", "20240101-20241231"):
        assert _planned_per_value({"PatientName": value})
    assert not _planned_per_value(exact)
    # One thread, one pooled connection: every search below runs on it.
    for _ in range(8):
        store.index.query(Level.STUDY, {"PatientName": "WANG*"})
        store.index.query(Level.STUDY, {"StudyDate": "20240101-20241231"})
        store.index.query(Level.STUDY, exact)
    with reading(engine) as conn:
        prepared = [
            row.statement for row in conn.execute(text("SELECT statement FROM pg_prepared_statements"))
        ]
        assert conn.connection.dbapi_connection.prepare_threshold is not None
    searches = [statement for statement in prepared if "studies.study_instance_uid" in statement]
    assert searches, prepared
    assert not [statement for statement in searches if " LIKE " in statement.upper() or ">=" in statement]
    assert [statement for statement in searches if "studies.study_instance_uid = " in statement]


def test_connections_to_postgresql_give_up_on_an_unreachable_host(store: InstanceStore) -> None:
    """A host that drops packets ends a connection attempt or a query in seconds, not minutes."""
    engine = store.index.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to lose")
    with engine.connect() as conn:
        parameters = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert parameters["connect_timeout"] == "10"
    assert parameters["tcp_user_timeout"] == "30000"
    assert (parameters["keepalives"], parameters["keepalives_idle"]) == ("1", "30")
    assert (parameters["keepalives_interval"], parameters["keepalives_count"]) == ("10", "3")


def test_the_database_url_may_set_its_own_timeouts() -> None:
    from teleconsult.storage.index import POSTGRESQL_CONNECT_DEFAULTS, postgresql_connect_args

    url = "postgresql+psycopg://u@db:5432/tele?connect_timeout=3&keepalives_idle=5"
    chosen = postgresql_connect_args(url)
    assert "connect_timeout" not in chosen
    assert "keepalives_idle" not in chosen
    assert chosen["tcp_user_timeout"] == POSTGRESQL_CONNECT_DEFAULTS["tcp_user_timeout"]
    assert postgresql_connect_args("postgresql+psycopg://u@db/tele") == POSTGRESQL_CONNECT_DEFAULTS
