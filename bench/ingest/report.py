"""What the benchmark prints: the machine, the versions and the result table.

Figures are only comparable on the same machine and versions, so every run
prints them above its table and stores them with its results.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench.ingest.receivers import BenchError, libpq_url
from bench.ingest.send import storescu_version

__all__ = [
    "TARGET_RATIO",
    "Row",
    "environment",
    "format_environment",
    "format_table",
    "load_average",
]

# teleconsult must ingest at least this fraction of the bare baseline's rate.
TARGET_RATIO = 0.8
MEGABYTE = 1_000_000


@dataclass(frozen=True, slots=True)
class Row:
    """The median result of one class and association count for both receivers."""

    class_name: str
    associations: int
    instances: int
    total_bytes: int
    baseline_seconds: float | None
    teleconsult_seconds: float | None

    def rate(self, seconds: float | None) -> tuple[float, float] | None:
        """(instances/s, MB/s) for a wall time, or None if the receiver failed."""
        if seconds is None or seconds <= 0:
            return None
        return self.instances / seconds, self.total_bytes / MEGABYTE / seconds

    @property
    def ratio(self) -> float | None:
        if self.baseline_seconds is None or self.teleconsult_seconds is None:
            return None
        return self.baseline_seconds / self.teleconsult_seconds


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    completed = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return completed.stdout.strip() or "unknown"


def _database(database_url: str | None) -> str:
    if database_url is None or database_url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version} (embedded, WAL, synchronous=FULL)"
    import psycopg

    host = database_url.split("@")[-1].split("?")[0]
    try:
        with psycopg.connect(libpq_url(database_url), connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        raise BenchError(f"cannot use the database at {host}: {exc}") from exc
    server = row[0] if row else "unknown"
    return f"PostgreSQL {server} at {host}"


def _source_revision() -> str:
    """The commit the receivers run, and whether their code differs from it."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        completed = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return completed.stdout.strip() if completed.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--", "teleconsult", "dicom_gateway").splitlines()
    return f"{head}" + (f" + uncommitted changes in {len(changed)} files" if changed else "")


def load_average() -> float:
    return os.getloadavg()[0]


def environment(database_url: str | None, work_dir: Path) -> dict[str, str]:
    """Machine, versions and storage the figures depend on."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{len(os.sched_getaffinity(0))} CPUs (nproc), {_cpu_model()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "teleconsult": f"{version('teleconsult')} at {_source_revision()}",
        "pynetdicom": version("pynetdicom"),
        "pydicom": version("pydicom"),
        "storescu": storescu_version(),
        "index": _database(database_url),
        "work dir": f"{work_dir} ({_filesystem(work_dir)})",
        "load average": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def format_environment(info: dict[str, str]) -> str:
    width = max(len(name) for name in info)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in info.items())


def _cells(row: Row) -> list[str]:
    cells = [row.class_name, str(row.associations), str(row.instances), f"{row.total_bytes / MEGABYTE:.0f}"]
    for seconds in (row.baseline_seconds, row.teleconsult_seconds):
        rate = row.rate(seconds)
        cells += [f"{rate[0]:.1f}", f"{rate[1]:.1f}"] if rate else ["FAIL", "FAIL"]
    ratio = row.ratio
    cells.append("-" if ratio is None else f"{ratio:.2f}")
    cells.append("-" if ratio is None else "ok" if ratio >= TARGET_RATIO else "BELOW")
    return cells


_HEADER = (
    "class",
    "assoc",
    "inst",
    "MB",
    "baseline inst/s",
    "MB/s",
    "teleconsult inst/s",
    "MB/s",
    "ratio",
    f"≥{TARGET_RATIO}",
)


def format_table(rows: Sequence[Row]) -> str:
    """An aligned text table: text columns left, numbers right."""
    table = [list(_HEADER), *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(_HEADER))]
    lines = []
    for line in table:
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
