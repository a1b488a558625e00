"""Look inside teleconsult's answers: the SQL alone, its plan, and the effect of extra indexes.

The SQL is built exactly as the C-FIND handler builds it (``parse_identifier``
then ``Index.query`` with the identifier's keys as return keys), so its time
and plan are those of the gateway's query minus the DIMSE work.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.query.queries import Query
from bench.query.servers import PEER_ORGANISATION

__all__ = ["INDEX_TABLES", "apply_sql", "explain", "index_query_seconds", "query_scope"]

# The tables a C-FIND reads (ANALYZE only these: a bare ANALYZE walks the whole database).
INDEX_TABLES = ("patients", "studies", "series", "instances")


def query_scope(index: Any) -> list[str] | None:
    """The organisations the gateway lets the benchmark's peer see (None: no scoping in this code)."""
    try:
        from teleconsult.domain.identity import descendants
        from teleconsult.storage.identity import IdentityStore
    except ImportError:
        return None
    return sorted(descendants(PEER_ORGANISATION, IdentityStore(index.engine).organisation_tree()))


def _query_args(query: Query) -> tuple[str, dict[str, str], list[str]]:
    from dicom_gateway.query import STUDY_ROOT_FIND, parse_identifier

    request = parse_identifier(query.identifier(), STUDY_ROOT_FIND)
    return request.level.value, request.keys, [keyword for keyword, _ in request.requested]


def index_query_seconds(index: Any, query: Query, scope: list[str] | None) -> float:
    """Wall time of ``Index.query`` (SQL, fetch, rows as dicts) for one query."""
    level, keys, return_keys = _query_args(query)
    started = time.perf_counter()
    rows = index.query(level, keys, return_keys=return_keys, organisations=scope)
    seconds = time.perf_counter() - started
    if len(rows) != query.expected:
        raise AssertionError(
            f"Index.query returned {len(rows)} rows for {query.keys}, expected {query.expected}"
        )
    return seconds


def _sql(index: Any, query: Query, scope: list[str] | None) -> str:
    from teleconsult.storage.matching import build_query

    level, keys, return_keys = _query_args(query)
    stmt = build_query(level, keys, return_keys=return_keys, organisations=scope)
    return str(stmt.compile(dialect=index.engine.dialect, compile_kwargs={"literal_binds": True}))


def explain(index: Any, query: Query, scope: list[str] | None) -> str:
    """The plan of one query: EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    sql = _sql(index, query, scope)
    prefix = "EXPLAIN (ANALYZE, BUFFERS)" if index.dialect == "postgresql" else "EXPLAIN QUERY PLAN"
    with index.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"{prefix} {sql}").all()
    plan = "\n".join(" | ".join(str(v) for v in row) for row in rows)
    return f"-- {query.kind.label}: {query.keys}\n{sql}\n{plan}"


def _statements(text: str) -> list[str]:
    """SQL statements of a file: ``--`` comments dropped, split on ``;`` at line ends."""
    without_comments = re.sub(r"--[^\n]*", "", text)
    return [s.strip() for s in re.split(r";\s*\n", without_comments + "\n") if s.strip().rstrip(";")]


def apply_sql(index: Any, path: Path) -> Sequence[str]:
    """Run each statement of ``path`` on the benchmark's index, then ANALYZE; returns the statements."""
    statements = _statements(path.read_text())
    with index.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement.rstrip(";"))
        conn.exec_driver_sql(
            f"ANALYZE {', '.join(INDEX_TABLES)}" if index.dialect == "postgresql" else "ANALYZE"
        )
    return statements
