"""What the benchmark prints: machine and versions, corpus and load times, the latency table.

Latencies are only comparable on one machine with one set of versions, so
every run prints them above its tables.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench.query.find import FindResult
from bench.query.load import LoadResult
from bench.query.queries import Query, QueryKind
from bench.query.quiet import NOISY_OTHER_CORES, Noise
from bench.query.servers import ORTHANC_BINARY

__all__ = [
    "FindscuSummary",
    "KindSummary",
    "Summary",
    "environment",
    "format_comparison",
    "format_corpus",
    "format_echo",
    "format_environment",
    "format_findscu",
    "format_noise",
    "format_tuning",
    "percentile",
    "summarise",
]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (``statistics.quantiles`` inclusive method)."""
    if len(values) == 1:
        return values[0]
    cut = statistics.quantiles(values, n=100, method="inclusive")
    return cut[round(fraction * 100) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """One server's results for one kind of query."""

    runs: int
    correct: int  # runs that returned exactly the expected UIDs with status Success
    failed: int  # runs whose final status was not Success
    matches: float  # median number of pending responses
    p50_ms: float
    p95_ms: float
    statuses: tuple[str, ...]

    @property
    def all_correct(self) -> bool:
        return self.correct == self.runs


def summarise(queries: Sequence[Query], results: Sequence[FindResult]) -> Summary:
    correct = sum(r.ok and r.uids == q.expected_uids for q, r in zip(queries, results, strict=True))
    times = [r.seconds * 1000 for r in results]
    statuses = sorted({r.error or "Success" for r in results})
    return Summary(
        runs=len(results),
        correct=correct,
        failed=sum(not r.ok for r in results),
        matches=statistics.median(r.responses for r in results),
        p50_ms=statistics.median(times),
        p95_ms=percentile(times, 0.95),
        statuses=tuple(statuses),
    )


@dataclass(frozen=True, slots=True)
class KindSummary:
    kind: QueryKind
    expected: float  # median expected matches
    teleconsult: Summary
    orthanc: Summary | None
    sql_p50_ms: float | None  # teleconsult's Index.query alone, in the benchmark process
    noise: Noise | None = None  # the rest of the machine while this kind was measured


@dataclass(frozen=True, slots=True)
class FindscuSummary:
    """One kind of query through DCMTK findscu: p50 and correct counts per server."""

    kind: QueryKind
    p50_ms: dict[str, float]
    correct: dict[str, int]
    runs: int

    @classmethod
    def of(
        cls, kind: QueryKind, queries: Sequence[Query], timings: dict[str, list[tuple[float, int]]]
    ) -> FindscuSummary:
        return cls(
            kind=kind,
            p50_ms={name: statistics.median(s for s, _ in runs) * 1000 for name, runs in timings.items()},
            correct={
                name: sum(count == q.expected for (_, count), q in zip(runs, queries, strict=True))
                for name, runs in timings.items()
            },
            runs=len(queries),
        )


def format_findscu(floor: dict[str, float], summaries: Sequence[FindscuSummary], runs: int) -> str:
    """The cross-check with a C++ client: p50 per kind, one findscu process per query."""
    names = list(floor)
    header = ["query", *(f"{n} p50 ms" for n in names), *(f"{n} correct" for n in names)]
    if len(names) == 2:
        header.append("p50 ratio o/tc")
    rows = []
    for s in summaries:
        row = [s.kind.label, *(_ms(s.p50_ms[n]) for n in names), *(f"{s.correct[n]}/{s.runs}" for n in names)]
        if len(names) == 2:
            row.append(f"{s.p50_ms[names[1]] / s.p50_ms[names[0]]:.1f}")
        rows.append(row)
    floors = ", ".join(f"{name} {value:.0f} ms" for name, value in floor.items())
    return (
        f"DCMTK findscu cross-check, {runs} queries of each kind, one process per query (TCP_NODELAY=1); "
        f"times include process start-up, association and release; a no-match query takes: {floors}\n"
        + _table(header, rows)
    )


def _run(command: Sequence[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    output = (result.stdout or result.stderr).strip().splitlines()
    return output[0] if output else "unavailable"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    """The commit of the working tree the run imported, and how many files differ from it."""
    root = Path(__file__).resolve().parents[2]
    head = _run(["git", "-C", str(root), "log", "-1", "--format=%h %cd", "--date=short"])
    changed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return f"{head}" + (f" + uncommitted changes in {len(changed)} files" if changed else "")


def environment(postgres_version: str | None) -> dict[str, str]:
    """Machine facts and versions of everything that takes part."""
    return {
        "teleconsult": _commit(),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "memory": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pydicom / pynetdicom": f"{version('pydicom')} / {version('pynetdicom')}",
        "SQLAlchemy / psycopg": f"{version('SQLAlchemy')} / {version('psycopg')}",
        "PostgreSQL": postgres_version or "not used",
        "SQLite (python module)": sqlite3.sqlite_version,
        "Orthanc": _run([ORTHANC_BINARY, "--version"]),
        "DCMTK": _run(["storescu", "--version"]).strip("$ "),
    }


def format_environment(env: dict[str, str]) -> str:
    width = max(len(name) for name in env)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in env.items())


def format_corpus(
    patients: int,
    studies: int,
    series: int,
    instances: int,
    years: Sequence[int],
    loads: Sequence[LoadResult],
) -> str:
    lines = [
        f"corpus: {instances} instances, {series} series, {studies} studies, {patients} patients, "
        f"study dates {years[0]}-{years[-1]} ({studies / len(years):.0f} studies a year)",
    ]
    for load in loads:
        lines.append(
            f"load {load.method}: {load.seconds:.1f} s ({load.rate:.0f} instances/s); "
            f"holds {load.instances} instances, {load.series} series, {load.studies} studies"
        )
    return "\n".join(lines)


def format_echo(echo: dict[str, list[float]]) -> str:
    """One line: the C-ECHO floor of each server (p50/p95 ms)."""
    parts = [
        f"{name} {statistics.median(times) * 1000:.1f} / {percentile(times, 0.95) * 1000:.1f}"
        for name, times in echo.items()
    ]
    return f"C-ECHO round trip p50 / p95 ms ({len(next(iter(echo.values()), []))} each): {', '.join(parts)}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_comparison(summaries: Sequence[KindSummary]) -> str:
    """The main table: matches and p50/p95 of both servers, and Orthanc p95 / teleconsult p95."""
    header = [
        "query",
        "expected",
        "matches tc / orthanc",
        "correct runs tc / orthanc",
        "tc p50 ms",
        "tc p95 ms",
        "orthanc p50 ms",
        "orthanc p95 ms",
        "p95 ratio o/tc",
        "tc SQL p50 ms",
        "other cores",
    ]
    rows = []
    for s in summaries:
        tc, orthanc = s.teleconsult, s.orthanc
        rows.append(
            [
                s.kind.label,
                f"{s.expected:g}",
                f"{tc.matches:g} / {orthanc.matches:g}" if orthanc else f"{tc.matches:g} / -",
                f"{tc.correct}/{tc.runs} / {orthanc.correct}/{orthanc.runs}"
                if orthanc
                else f"{tc.correct}/{tc.runs} / -",
                _ms(tc.p50_ms),
                _ms(tc.p95_ms),
                _ms(orthanc.p50_ms) if orthanc else "-",
                _ms(orthanc.p95_ms) if orthanc else "-",
                f"{orthanc.p95_ms / tc.p95_ms:.1f}" if orthanc and tc.p95_ms > 0 else "-",
                _ms(s.sql_p50_ms),
                _noise(s.noise),
            ]
        )
    notes = [
        f"{s.kind.label}: {name} statuses {', '.join(summary.statuses)}"
        for s in summaries
        for name, summary in (("teleconsult", s.teleconsult), ("orthanc", s.orthanc))
        if summary is not None and summary.failed
    ]
    return _table(header, rows) + ("\n" + "\n".join(notes) if notes else "")


def _noise(noise: Noise | None) -> str:
    if noise is None:
        return "-"
    return f"{noise.other_cores:.2f}" + (" NOISY" if noise.noisy else "")


def format_noise(summaries: Sequence[KindSummary], threshold: float, timeout: float) -> str:
    """One line: how the run waited for a quiet machine and how many kinds were NOISY anyway."""
    noises = [s.noise for s in summaries if s.noise is not None]
    noisy = sum(n.noisy for n in noises)
    waited = sum(n.waited for n in noises)
    wait = (
        f"waited up to {timeout:.0f} s per kind for at most {threshold:.0%} of the CPUs busy "
        f"({waited:.0f} s in all)"
        if timeout > 0
        else "no wait for a quiet machine"
    )
    return (
        f"{wait}; {noisy} of {len(noises)} kinds NOISY (other processes over {NOISY_OTHER_CORES} cores "
        "on average while measured)"
    )


def format_tuning(before: Sequence[KindSummary], after: Sequence[KindSummary], sql_file: str) -> str:
    """teleconsult alone, before and after the statements of ``--try-sql``."""
    header = [
        "query",
        "correct after",
        "p50 before",
        "p50 after",
        "p95 before",
        "p95 after",
        "SQL p50 before",
        "SQL p50 after",
    ]
    rows = [
        [
            b.kind.label,
            f"{a.teleconsult.correct}/{a.teleconsult.runs}",
            _ms(b.teleconsult.p50_ms),
            _ms(a.teleconsult.p50_ms),
            _ms(b.teleconsult.p95_ms),
            _ms(a.teleconsult.p95_ms),
            _ms(b.sql_p50_ms),
            _ms(a.sql_p50_ms),
        ]
        for b, a in zip(before, after, strict=True)
    ]
    return f"teleconsult alone, before and after {sql_file} (ms):\n" + _table(header, rows)
