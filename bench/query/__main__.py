"""``python -m bench.query``: C-FIND latency of teleconsult against Orthanc on the same corpus.

A synthetic corpus shaped like a county archive (100,000 small instances by
default) is loaded into teleconsult (its store API, in-process) and into
Orthanc 1.10 (default SQLite index). Then one pynetdicom client asks both the
same Study Root C-FINDs over one association each, alternating between them,
and prints p50/p95 per query kind. teleconsult must return exactly the
studies (or series) the corpus says; anything else is a non-zero exit.
Everything lives in a temporary directory (and, on PostgreSQL, a throw-away
schema) that is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

from bench.query.corpus import Corpus, build_corpus
from bench.query.datasets import EncodedInstance, encode_corpus
from bench.query.explain import INDEX_TABLES, apply_sql, explain, index_query_seconds, query_scope
from bench.query.find import DEFAULT_TIMEOUT, FindClient, FindResult, find_client, findscu
from bench.query.load import LoadResult, load_orthanc_rest, load_orthanc_storescu, load_teleconsult
from bench.query.queries import KINDS, Query, draw_queries
from bench.query.quiet import CpuWindow, Noise, wait_until_quiet
from bench.query.report import (
    FindscuSummary,
    KindSummary,
    environment,
    format_comparison,
    format_corpus,
    format_echo,
    format_environment,
    format_findscu,
    format_noise,
    format_tuning,
    summarise,
)
from bench.query.servers import (
    BenchError,
    Endpoint,
    backend_pids,
    libpq_url,
    orthanc_server,
    postgres_schema,
    teleconsult_gateway,
)

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
_QUICK_INSTANCES = 5000
_WARMUP = 3

_PRODUCT_MODULES = (
    "teleconsult.config",
    "teleconsult.domain.studies",
    "teleconsult.storage.index",
    "teleconsult.storage.matching",
    "teleconsult.storage.store",
    "dicom_gateway.query",
    "dicom_gateway.ae",
)
# the organisation tree that scopes queries, where the code has one
_OPTIONAL_PRODUCT_MODULES = ("teleconsult.domain.identity", "teleconsult.storage.identity")

Results = dict[str, dict[str, list[FindResult]]]  # kind -> server -> one result per run
Noises = dict[str, Noise]  # kind -> the machine while it was measured
_ECHOES = 50


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, help="corpus size (default 100000; --quick: 5000)")
    parser.add_argument("--quick", action="store_true", help=f"{_QUICK_INSTANCES} instances, 20 runs")
    parser.add_argument("--runs", type=int, help="measured queries of each kind (default 50; --quick: 20)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="teleconsult's PostgreSQL (a fresh bench_<random> schema is used and dropped), "
        "or 'sqlite' for the embedded default in the temporary data directory",
    )
    parser.add_argument("--seed", type=int, default=20251, help="corpus and query draw seed")
    parser.add_argument("--load-threads", type=int, default=8, help="threads storing into teleconsult")
    parser.add_argument(
        "--orthanc-load",
        choices=("rest", "storescu"),
        default="rest",
        help="REST POST /instances (default, faster here) or DCMTK storescu",
    )
    parser.add_argument("--orthanc-senders", type=int, default=4, help="parallel senders loading Orthanc")
    parser.add_argument("--no-orthanc", action="store_true", help="measure teleconsult alone")
    parser.add_argument(
        "--findscu-runs",
        type=int,
        default=10,
        help="also time this many queries of each kind through DCMTK findscu, one process each (0: skip)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds the client waits for the next C-FIND response (and findscu for its query); "
        f"default {DEFAULT_TIMEOUT:.0f}, since Orthanc answers one year of studies in seconds",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each query kind, wait until at most this share of all CPUs is busy (default 0.15)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        help="longest wait for a quiet machine per query kind, in seconds; 0 = never wait "
        "(default 60, quick 0)",
    )
    parser.add_argument("--explain", action="store_true", help="print the plan of one query of each kind")
    parser.add_argument(
        "--try-sql",
        type=Path,
        help="after measuring, run this SQL file on teleconsult's index (e.g. CREATE INDEX), ANALYZE, "
        "and measure teleconsult again",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="parent of the temporary directory (default: system temp)"
    )
    return parser


def _log(message: str) -> None:
    """Progress on stderr, so a long run in the background can be followed in its log."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    """Turn SIGTERM into SystemExit so every server is stopped by its finally block."""
    raise SystemExit(128 + signum)


def _clean_environment() -> None:
    """Drop TELECONSULT_* variables: only the benchmark configures teleconsult (children inherit this)."""
    for name in [name for name in os.environ if name.startswith("TELECONSULT_")]:
        del os.environ[name]


@contextmanager
def _index_url(database_url: str) -> Iterator[tuple[str | None, str | None]]:
    """(teleconsult database URL or None for SQLite, PostgreSQL version or None)."""
    if database_url == "sqlite":
        yield None, None
        return
    import psycopg

    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    with postgres_schema(database_url) as (schema, url):
        _log(f"PostgreSQL schema {schema}")
        yield url, str(row[0]) if row else "unknown"


def _open_index(data_dir: Path, database_url: str | None) -> Any:
    from teleconsult.storage.index import Index

    return Index(
        database_url or f"sqlite:///{(data_dir / 'index.sqlite3').resolve()}",
    )


@dataclass(frozen=True, slots=True)
class _Quiet:
    """How to wait for a quiet machine, and whose CPU time is the benchmark's own."""

    threshold: float
    timeout: float
    own_pids: Callable[[], Sequence[int]]


def _report_failures(kind_label: str, client: FindClient, query: Query, result: FindResult) -> None:
    """Every failed or wrong answer on stderr, as it happens: which server, kind, keys and why."""
    if result.ok and result.uids == query.expected_uids:
        return
    what = result.error or f"{len(result.uids)} matches where {query.expected} were expected"
    _log(f"  {client.endpoint.name}, {kind_label} {query.keys}: {what} ({result.seconds:.1f} s)")


def _measure(
    clients: Sequence[FindClient], queries: dict[str, list[Query]], warmup: int, quiet: _Quiet
) -> tuple[Results, Noises]:
    """Every query on every client, alternating which server goes first, after ``warmup`` unmeasured ones.

    Before each kind the machine gets up to ``quiet.timeout`` seconds to calm
    down; what other processes used while the kind was measured is returned.
    """
    results: Results = {kind.name: {c.endpoint.name: [] for c in clients} for kind in KINDS}
    noises: Noises = {}
    for kind in KINDS:
        drawn = queries[kind.name]
        for query in drawn[:warmup]:
            for client in clients:
                _report_failures(kind.label, client, query, client.find(query.identifier(), query.unique_key))
        busy, waited = (
            wait_until_quiet(quiet.threshold, quiet.timeout) if quiet.timeout > 0 else (float("nan"), 0.0)
        )
        started = time.monotonic()
        window = CpuWindow(quiet.own_pids)
        for number, query in enumerate(drawn[warmup:]):
            order = clients if number % 2 == 0 else list(reversed(clients))
            for client in order:
                result = client.find(query.identifier(), query.unique_key)
                _report_failures(kind.label, client, query, result)
                results[kind.name][client.endpoint.name].append(result)
        noises[kind.name] = noise = Noise(busy, waited, window.other_cores())
        measured = drawn[warmup:]
        figures = "; ".join(
            f"{name} {summary.correct}/{summary.runs} correct, p50 {summary.p50_ms:.1f} ms, "
            f"p95 {summary.p95_ms:.1f} ms"
            for name, runs in results[kind.name].items()
            for summary in [summarise(measured, runs)]
        )
        _log(
            f"{kind.label}: {figures} ({time.monotonic() - started:.0f} s; other processes "
            f"{noise.other_cores:.2f} cores{', NOISY' if noise.noisy else ''})"
        )
    return results, noises


def _measure_echo(clients: Sequence[FindClient]) -> dict[str, list[float]]:
    """C-ECHO round trips, alternating servers: what any request costs before the server does any work."""
    for client in clients:
        client.echo()
    seconds: dict[str, list[float]] = {client.endpoint.name: [] for client in clients}
    for number in range(_ECHOES):
        for client in clients if number % 2 == 0 else list(reversed(clients)):
            seconds[client.endpoint.name].append(client.echo())
    return seconds


def _measure_findscu(
    endpoints: Sequence[Any], queries: dict[str, list[Query]], runs: int, timeout: float
) -> tuple[dict[str, float], list[FindscuSummary]]:
    """findscu start-up floor per server, then ``runs`` queries of each kind, alternating servers."""
    no_match = Query(KINDS[0], {"StudyInstanceUID": "2.25.1"}, frozenset())
    floor = {
        endpoint.name: statistics.median(findscu(endpoint, no_match, timeout)[0] for _ in range(10)) * 1000
        for endpoint in endpoints
    }
    summaries = []
    for kind in KINDS:
        chosen = queries[kind.name][_WARMUP : _WARMUP + runs]
        timings: dict[str, list[tuple[float, int]]] = {endpoint.name: [] for endpoint in endpoints}
        for number, query in enumerate(chosen):
            for endpoint in endpoints if number % 2 == 0 else list(reversed(endpoints)):
                timings[endpoint.name].append(findscu(endpoint, query, timeout))
        summaries.append(FindscuSummary.of(kind, chosen, timings))
        _log(f"findscu {kind.label}: done")
    return floor, summaries


def _sql_p50(index: Any, queries: Sequence[Query]) -> float:
    scope = query_scope(index)
    return statistics.median(index_query_seconds(index, q, scope) for q in queries) * 1000


def _summaries(
    results: Results, queries: dict[str, list[Query]], warmup: int, index: Any, noises: Noises
) -> list[KindSummary]:
    summaries = []
    for kind in KINDS:
        measured = queries[kind.name][warmup:]
        by_server = results[kind.name]
        orthanc = by_server.get("orthanc")
        summaries.append(
            KindSummary(
                kind=kind,
                expected=statistics.median(q.expected for q in measured),
                teleconsult=summarise(measured, by_server["teleconsult"]),
                orthanc=summarise(measured, orthanc) if orthanc else None,
                sql_p50_ms=_sql_p50(index, measured),
                noise=noises.get(kind.name),
            )
        )
    return summaries


def _print_plans(index: Any, queries: dict[str, list[Query]], title: str) -> None:
    print(f"\n## Plans {title}\n")
    for kind in KINDS:
        print(explain(index, queries[kind.name][-1], query_scope(index)), end="\n\n")


@dataclass
class _Run:
    """Everything one benchmark run produced, for the final report."""

    env: dict[str, str]
    corpus: Corpus
    loads: list[LoadResult]
    summaries: list[KindSummary]
    echo: dict[str, list[float]] = field(default_factory=dict)  # server -> C-ECHO seconds
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)  # os.getloadavg() around the measurement
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orthanc_restarts: list[str] = field(default_factory=list)  # Orthanc killed from outside, restarted
    untuned: list[KindSummary] | None = None  # teleconsult alone, before --try-sql
    tuned: list[KindSummary] | None = None  # teleconsult alone, after it


def _load_orthanc(
    args: argparse.Namespace, orthanc: Any, corpus: Corpus, encoded: list[EncodedInstance], tmp: Path
) -> LoadResult:
    _log(f"loading Orthanc ({args.orthanc_load}, {args.orthanc_senders} senders)")
    if args.orthanc_load == "rest":
        return load_orthanc_rest(orthanc, corpus, encoded, args.orthanc_senders)
    return load_orthanc_storescu(orthanc, corpus, encoded, tmp / "part10", args.orthanc_senders)


def _own_processes(endpoint: Endpoint, orthanc: Any, database_url: str | None) -> Callable[[], list[int]]:
    """The processes working for this run besides this one: gateway, Orthanc, PostgreSQL backends."""
    query = parse_qs(urlsplit(database_url).query) if database_url else {}
    application_name = query.get("application_name", [""])[0]

    def pids() -> list[int]:
        own = [pid for pid in (endpoint.pid, orthanc.process.pid if orthanc else None) if pid]
        if database_url and application_name:
            own += backend_pids(database_url, application_name)
        return own

    return pids


def _measure_servers(
    args: argparse.Namespace,
    run: _Run,
    queries: dict[str, list[Query]],
    data_dir: Path,
    database_url: str | None,
    orthanc: Any,
) -> None:
    index = _open_index(data_dir, database_url)
    try:
        with (
            teleconsult_gateway(data_dir, database_url) as endpoint,
            find_client(endpoint, timeout=args.timeout) as teleconsult,
        ):
            quiet = _Quiet(
                args.quiet_threshold, args.quiet_timeout, _own_processes(endpoint, orthanc, database_url)
            )
            clients = [teleconsult]
            orthanc_context = (
                find_client(orthanc.endpoint, orthanc.ensure_running, args.timeout) if orthanc else _nothing()
            )
            with orthanc_context as orthanc_client:
                if orthanc_client is not None:
                    clients.append(orthanc_client)
                run.load_before = os.getloadavg()
                _log("measuring C-ECHO and C-FIND")
                run.echo = _measure_echo(clients)
                results, noises = _measure(clients, queries, _WARMUP, quiet)
                run.load_after = os.getloadavg()
                run.orthanc_restarts = list(orthanc.restarts) if orthanc else []
            run.summaries = _summaries(results, queries, _WARMUP, index, noises)
            # Printed now: a later step (plans, --try-sql) failing must not lose these figures.
            _print_report(run, args)
            if args.findscu_runs > 0:
                endpoints = [endpoint, *([orthanc.endpoint] if orthanc else [])]
                if orthanc:
                    orthanc.ensure_running()
                _log("measuring with DCMTK findscu")
                floor, findscu_summaries = _measure_findscu(
                    endpoints, queries, args.findscu_runs, args.timeout
                )
                print("\n" + format_findscu(floor, findscu_summaries, args.findscu_runs), flush=True)
            if args.explain:
                _print_plans(index, queries, "(as loaded)")
            if args.try_sql:
                # Both passes ask teleconsult alone, so they differ only by the SQL applied.
                _log("measuring teleconsult alone, before --try-sql")
                before, noises = _measure([teleconsult], queries, _WARMUP, quiet)
                run.untuned = _summaries(before, queries, _WARMUP, index, noises)
                for statement in apply_sql(index, args.try_sql):
                    _log(f"applied: {' '.join(statement.split())}")
                after, noises = _measure([teleconsult], queries, _WARMUP, quiet)
                run.tuned = _summaries(after, queries, _WARMUP, index, noises)
                print("\n" + format_tuning(run.untuned, run.tuned, str(args.try_sql)), flush=True)
                if args.explain:
                    _print_plans(index, queries, f"(after {args.try_sql})")
    finally:
        index.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _benchmark(args: argparse.Namespace) -> _Run:
    corpus = build_corpus(args.instances, args.seed)
    _log(f"corpus: {corpus.instance_count} instances in {len(corpus.studies)} studies; encoding")
    encoded = list(encode_corpus(corpus))
    queries = draw_queries(corpus, args.runs + _WARMUP, args.seed + 1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-query-", dir=args.work_dir) as tmp,
        _index_url(args.database_url) as (database_url, postgres_version),
    ):
        run = _Run(environment(postgres_version), corpus, [], [])
        data_dir = Path(tmp) / "teleconsult"
        _log(
            f"loading teleconsult ({args.load_threads} threads, {'PostgreSQL' if database_url else 'SQLite'})"
        )
        run.loads.append(load_teleconsult(corpus, encoded, data_dir, database_url, args.load_threads))
        _log(f"teleconsult loaded in {run.loads[-1].seconds:.1f} s")
        if database_url:
            _analyze(data_dir, database_url)
        if args.no_orthanc:
            _measure_servers(args, run, queries, data_dir, database_url, None)
            return run
        with orthanc_server(Path(tmp) / "orthanc") as orthanc:
            run.loads.append(_load_orthanc(args, orthanc, corpus, encoded, Path(tmp)))
            _log(f"Orthanc loaded in {run.loads[-1].seconds:.1f} s")
            del encoded
            _measure_servers(args, run, queries, data_dir, database_url, orthanc)
    return run


def _analyze(data_dir: Path, database_url: str) -> None:
    """VACUUM ANALYZE the freshly loaded tables now, as autovacuum would within minutes, not mid-run.

    The statistics give the planner the archive's real shape, and the vacuum
    sets the visibility map that an index-only scan (the count subqueries)
    needs to skip the table: the state of an archive that has been running,
    not of one loaded a second ago. Only the index's tables: a bare VACUUM
    would walk every schema of the database.
    """
    index = _open_index(data_dir, database_url)
    try:
        with index.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(INDEX_TABLES)}")
    finally:
        index.close()


def _print_report(run: _Run, args: argparse.Namespace) -> None:
    corpus = run.corpus
    backend = "SQLite (embedded default)" if args.database_url == "sqlite" else "PostgreSQL"
    print(f"\n# bench.query — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, teleconsult index on {backend}\n")
    print(format_environment(run.env), end="\n\n")
    print(
        format_corpus(
            len(corpus.patients),
            len(corpus.studies),
            corpus.series_count,
            corpus.instance_count,
            corpus.years,
            run.loads,
        ),
        end="\n\n",
    )
    print(
        f"C-FIND Study Root, pynetdicom SCU, one association per server, {args.runs} runs per kind "
        f"(+{_WARMUP} warm-up), values drawn from the corpus; tc = teleconsult; "
        "ratio > 1: teleconsult faster\n"
    )
    print(format_echo(run.echo))
    print(
        "load average (1/5/15 min) at the start and end of the measurement: "
        f"{'/'.join(f'{v:.1f}' for v in run.load_before)} and "
        f"{'/'.join(f'{v:.1f}' for v in run.load_after)}\n"
    )
    if run.orthanc_restarts:
        print(
            f"Orthanc exited during the measurement and was restarted {len(run.orthanc_restarts)} times "
            f"({', '.join(run.orthanc_restarts)}); its failed queries count as incorrect runs\n"
        )
    print(format_comparison(run.summaries))
    print(format_noise(run.summaries, args.quiet_threshold, args.quiet_timeout), flush=True)


def _import_product() -> None:
    """Import every teleconsult module the run uses, once, at start.

    The gateway child is forked, not spawned, so it runs this same code: a
    working tree edited during a 30-minute run cannot change or break it
    half-way.
    """
    for module in _PRODUCT_MODULES:
        importlib.import_module(module)
    for module in _OPTIONAL_PRODUCT_MODULES:
        with suppress(ImportError):
            importlib.import_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    _clean_environment()
    args.instances = args.instances or (_QUICK_INSTANCES if args.quick else 100_000)
    args.runs = args.runs or (20 if args.quick else 50)
    if args.quiet_timeout is None:
        args.quiet_timeout = 0.0 if args.quick else 60.0
    started = time.monotonic()
    try:
        _import_product()
        run = _benchmark(args)
    except ImportError as exc:
        print(f"FAIL: teleconsult cannot be imported from this working tree: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # every server is stopped by now; say what broke and where
        traceback.print_exc()
        print(
            f"FAIL: unexpected {type(exc).__name__} after {time.monotonic() - started:.0f} s: {exc} "
            "(figures measured before it are printed above)",
            file=sys.stderr,
        )
        return 2
    _log(f"done in {time.monotonic() - started:.0f} s")
    everything = run.summaries + (run.untuned or []) + (run.tuned or [])
    wrong = sorted({s.kind.label for s in everything if not s.teleconsult.all_correct})
    if wrong:
        print(f"\nFAIL: teleconsult returned wrong matches for: {', '.join(wrong)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
